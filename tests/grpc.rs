//! gRPC through the edge end to end: a real tonic origin (h2c on 127.0.0.1), the real `portcullis serve`, and a real
//! tonic client over TLS (the edge's development CA as root, a client certificate from the managed CA as identity).
//! Unary calls, bidirectional streams, error statuses and custom trailers pass through unchanged; blocked calls get
//! the gRPC status a gRPC client understands, and never reach the origin.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_testgrpc::echo::echo_client::EchoClient;
use portcullis_testgrpc::echo::echo_server::{Echo, EchoServer};
use portcullis_testgrpc::echo::{EchoReply, EchoRequest};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::support::{Server, foreign_client_cert, issue_client_cert, ok};

/// Every call must finish well within this; a hang fails the test instead of stalling the suite.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

const UNARY: &str = "/portcullis.test.Echo/Unary";
const CHAT: &str = "/portcullis.test.Echo/Chat";

/// The origin: counts the calls that reach it.
#[derive(Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Origin {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let client_cert_forwarded = request.metadata().contains_key("client-cert");
        let mut response = Response::new(EchoReply {
            text: format!("echo: {}", request.get_ref().text),
            index: 0,
            client_cert_forwarded,
        });
        response
            .metadata_mut()
            .insert("x-origin", "tonic".parse().expect("metadata"));
        Ok(response)
    }

    type ChatStream = ReplyStream;

    async fn chat(&self, request: Request<Streaming<EchoRequest>>) -> Result<Response<ReplyStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut index = 0u32;
            while let Some(Ok(message)) = inbound.next().await {
                if message.text == "fail" {
                    // An error after DATA frames travels in real HTTP/2 trailers.
                    let mut metadata = MetadataMap::new();
                    metadata.insert("x-replies-sent", index.to_string().parse().expect("metadata"));
                    let status = Status::with_metadata(Code::Aborted, "asked to fail", metadata);
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                index += 1;
                let reply = EchoReply {
                    text: format!("echo: {}", message.text),
                    index,
                    client_cert_forwarded: false,
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn missing(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let text = request.into_inner().text;
        let mut metadata = MetadataMap::new();
        metadata.insert("x-widget", text.parse().expect("metadata"));
        Err(Status::with_metadata(
            Code::NotFound,
            format!("no widget named {text}"),
            metadata,
        ))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Starts the tonic origin (h2c only) on 127.0.0.1 in `rt`; returns its port and its call counter.
fn start_origin(rt: &tokio::runtime::Runtime) -> (u16, Arc<AtomicUsize>) {
    let origin = Origin::default();
    let calls = origin.calls.clone();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the gRPC origin");
    let port = listener.local_addr().expect("its address").port();
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(origin))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (port, calls)
}

/// `localhost` in front of the gRPC origin (h2c, RFC 9440 forwarding), mTLS with the managed CA, the mTLS rule on
/// the Unary and Chat methods and a rule on the gRPC fields for Missing; a client certificate in `<scratch>/device/`.
fn setup(server: &Server, origin_port: u16) {
    let origin = format!("http://127.0.0.1:{origin_port}");
    ok(&server.cli(&["zone", "add", "localhost"]));
    ok(&server.cli(&[
        "host",
        "add",
        "localhost",
        "--origin",
        &origin,
        "--origin-h2",
        "--forward-cert",
        "rfc9440",
    ]));
    ok(&server.cli(&["mtls", "enable", "localhost"]));
    ok(&server.cli(&["rule", "add-mtls", "--path", UNARY, CHAT]));
    ok(&server.cli(&[
        "rule",
        "add",
        "--action",
        "block",
        "--expression",
        r#"not cf.tls_client_auth.cert_verified and portcullis.grpc.service eq "portcullis.test.Echo" and portcullis.grpc.method eq "Missing""#,
    ]));
    issue_client_cert(server, "device");
}

/// A tonic channel to the edge: TCP to 127.0.0.1:edge_port, TLS with SNI `localhost`, the edge's development CA as
/// root, and `identity` (certificate and key PEM files) when given.
async fn channel(server: &Server, identity: Option<(&Path, &Path)>) -> Channel {
    let ca = std::fs::read_to_string(server.data_dir().join("edge-dev-ca.pem")).expect("the edge CA");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).expect("the client certificate"),
            std::fs::read(key).expect("the client key"),
        ));
    }
    let port = server.edge_port;
    let connect = tower::service_fn(move |_: http::Uri| async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(hyper_util::rt::TokioIo::new)
    });
    let endpoint = Endpoint::from_shared(format!("https://localhost:{port}"))
        .expect("an endpoint")
        .tls_config(tls)
        .expect("a TLS configuration");
    tokio::time::timeout(CALL_TIMEOUT, endpoint.connect_with_connector(connect))
        .await
        .expect("connected in time")
        .expect("connected to the edge")
}

fn request(text: &str) -> EchoRequest {
    EchoRequest { text: text.to_owned() }
}

async fn timed<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(CALL_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

#[test]
fn grpc_calls_with_a_certificate_pass_through_the_edge_with_streams_statuses_and_trailers() {
    let rt = runtime();
    let (origin_port, calls) = start_origin(&rt);
    let server = Server::start();
    setup(&server, origin_port);
    let device = server.dir.path().join("device");
    rt.block_on(async {
        let channel = channel(&server, Some((&device.join("cert.pem"), &device.join("key.pem")))).await;
        let mut client = EchoClient::new(channel);

        // Unary: the reply, the origin's response metadata, and the certificate forwarded to the origin.
        let response = timed("unary", client.unary(request("hello")))
            .await
            .expect("unary allowed");
        assert_eq!(
            response.metadata().get("x-origin").map(|v| v.to_str().ok()),
            Some(Some("tonic")),
            "{:?}",
            response.metadata()
        );
        let reply = response.into_inner();
        assert_eq!(reply.text, "echo: hello");
        assert!(reply.client_cert_forwarded, "the origin got the client certificate");

        // A 1 MB message each way (many HTTP/2 flow-control windows), and eight calls multiplexed on one connection.
        let big = "x".repeat(1_000_000);
        let reply = timed("a large unary", client.unary(request(&big)))
            .await
            .expect("allowed")
            .into_inner();
        assert!(reply.text.len() == big.len() + 6 && reply.text.ends_with(&big[..1000]));
        let concurrent: Vec<_> = (0..8)
            .map(|i| {
                let mut client = client.clone();
                tokio::spawn(async move { client.unary(request(&format!("call {i}"))).await })
            })
            .collect();
        for (i, call) in concurrent.into_iter().enumerate() {
            let reply = timed("a concurrent call", call).await.expect("the call's task");
            assert_eq!(reply.expect("allowed").into_inner().text, format!("echo: call {i}"));
        }

        // Bidirectional streaming, ping-pong: each message is sent only after the previous reply came back, so
        // nothing on the way may buffer a whole stream.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(request("m0")).await.expect("queued");
        let mut replies = timed("chat", client.chat(ReceiverStream::new(rx)))
            .await
            .expect("chat allowed")
            .into_inner();
        for i in 0..5u32 {
            if i > 0 {
                tx.send(request(&format!("m{i}"))).await.expect("queued");
            }
            let reply = timed("a chat reply", replies.message())
                .await
                .expect("a reply, not an error")
                .expect("the stream goes on");
            assert_eq!(
                (reply.text.as_str(), reply.index),
                (format!("echo: m{i}").as_str(), i + 1)
            );
        }
        // An error status after five replies arrives in the trailers, with the origin's metadata.
        tx.send(request("fail")).await.expect("queued");
        let status = timed("the chat's end", replies.message())
            .await
            .expect_err("the origin ended the stream with an error");
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        assert_eq!(status.message(), "asked to fail");
        assert_eq!(
            status.metadata().get("x-replies-sent").map(|v| v.to_str().ok()),
            Some(Some("5")),
            "{status:?}"
        );

        // A stream the client closes ends cleanly (grpc-status 0 in the trailers) after all its replies.
        let outbound = tokio_stream::iter(["a", "b", "c"].map(request));
        let mut replies = timed("chat", client.chat(outbound))
            .await
            .expect("chat allowed")
            .into_inner();
        let mut texts = Vec::new();
        while let Some(reply) = timed("a chat reply", replies.message()).await.expect("no error") {
            texts.push(reply.text);
        }
        assert_eq!(texts, ["echo: a", "echo: b", "echo: c"]);

        // A unary error status with custom metadata (a trailers-only response).
        let status = timed("missing", client.missing(request("w-42")))
            .await
            .expect_err("the origin answers NOT_FOUND");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), "no widget named w-42");
        assert_eq!(
            status.metadata().get("x-widget").map(|v| v.to_str().ok()),
            Some(Some("w-42")),
            "{status:?}"
        );
    });
    assert_eq!(calls.load(Ordering::SeqCst), 13, "every call reached the origin once");
}

#[test]
fn blocked_grpc_calls_get_unauthenticated_or_permission_denied_and_never_reach_the_origin() {
    let rt = runtime();
    let (origin_port, calls) = start_origin(&rt);
    let server = Server::start();
    setup(&server, origin_port);
    let (foreign_cert, foreign_key) = foreign_client_cert(server.dir.path());
    rt.block_on(async {
        // No certificate: UNAUTHENTICATED, for unary and streaming calls and the gRPC-field rule alike.
        let mut anonymous = EchoClient::new(channel(&server, None).await);
        let status = timed("unary", anonymous.unary(request("hello")))
            .await
            .expect_err("blocked");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(status.code() as i32, 16);
        let status = timed("chat", anonymous.chat(tokio_stream::iter([request("hello")])))
            .await
            .expect_err("blocked");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status = timed("missing", anonymous.missing(request("w-1")))
            .await
            .expect_err("blocked");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "the edge, not the origin, answered: {status:?}"
        );

        // A certificate from a CA the host does not trust: PERMISSION_DENIED.
        let mut stranger = EchoClient::new(channel(&server, Some((&foreign_cert, &foreign_key))).await);
        let status = timed("unary", stranger.unary(request("hello")))
            .await
            .expect_err("blocked");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(status.code() as i32, 7);
        let status = timed("chat", stranger.chat(tokio_stream::iter([request("hello")])))
            .await
            .expect_err("blocked");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    });
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no blocked call reached the origin");

    // The same client certificate setup does pass when it comes from the managed CA (so the blocks above are the
    // rules' doing, not a broken channel).
    let device = server.dir.path().join("device");
    rt.block_on(async {
        let mut client =
            EchoClient::new(channel(&server, Some((&device.join("cert.pem"), &device.join("key.pem")))).await);
        let reply = timed("unary", client.unary(request("hi")))
            .await
            .expect("allowed")
            .into_inner();
        assert_eq!(reply.text, "echo: hi");
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
