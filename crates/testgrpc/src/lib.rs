//! Test-only: the generated code of `proto/echo.proto` (package `portcullis.test`, service `Echo`), used by the
//! root package's end-to-end gRPC tests as both the origin and the client.

#![allow(clippy::all, clippy::pedantic, unused_qualifications, missing_docs)]

/// `portcullis.test`: messages, `echo_client::EchoClient` and `echo_server::{Echo, EchoServer}`.
pub mod echo {
    tonic::include_proto!("portcullis.test");
}
