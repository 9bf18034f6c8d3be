//! Persistence for Portcullis.
//!
//! One [`Store`] over either SQLite (the embedded default: a file in the data directory, WAL mode) or PostgreSQL
//! (for a fleet of edge nodes sharing one state). Versioned migrations run when a store is opened. Every write is one
//! transaction that also bumps the change-feed generation and appends to the audit log, so nothing is ever
//! half-written and every committed change is announced: within the process through [`Store::subscribe`], and on
//! PostgreSQL across processes through `LISTEN/NOTIFY`.
//!
//! This crate does not speak HTTP, terminate TLS or evaluate rules: it stores records and says when they changed.
//!
//! Design note: one `Store` type over an enum of two connection pools, with each query written once and expanded for
//! both backends by a macro, replaces a `Store` trait with two hand-written implementations. The SQL is the same text
//! on both (`$1` placeholders, unix-second times, 0/1 flags), so a trait would only duplicate it.

mod acme;
mod cas;
mod client_certs;
mod custom_certs;
mod db;
mod edge;
mod error;
mod events;
mod feed;
mod hostnames;
mod ids;
mod lists;
mod model;
mod rulesets;
mod tokens;
mod zones;

#[cfg(test)]
mod tests;

pub use acme::{
    AcmeChallenge, AcmeDns, AcmeHttpAnswer, CertificatePack, DNS_VALIDATION, HTTP_VALIDATION, MAX_PACK_HOSTS,
    MAX_PACKS_PER_ZONE,
};
pub use cas::{MAX_ASSOCIATED_HOSTNAMES, MAX_CRL_GRACE_SECONDS, MAX_MANAGED_CA_REQUESTS, MAX_REVOCATIONS_PER_CA};
pub use client_certs::{ClientCertQuery, MAX_PER_PAGE};
pub use db::Store;
pub use error::StoreError;
pub use events::MAX_EVENTS_PER_PAGE;
pub use hostnames::check_hostname;
pub use lists::{MAX_LIST_ITEMS, MAX_LIST_ITEMS_PER_PAGE, MAX_LIST_TEXT, MAX_LISTS, MAX_TOTAL_LIST_ITEMS};
pub use model::{
    Account, Actor, ApiToken, AuditEntry, CaRef, ClientCertificate, ClientCertificateStatus, CustomCertificate,
    EdgeList, EdgeState, EventFilter, Hostname, HostnameAssociation, List, ListItem, ListOperation, ManagedCa,
    ManagedCaRequest, ManagedCaStatus, MtlsCertificate, MtlsRevocation, NewCustomCertificate, NewListItem,
    NewManagedCa, NewManagedCaRequest, NewMtlsCertificate, NewMtlsRevocation, NewRule, Rule, Ruleset, SecurityEvent,
    TokenRestrictions, TokenScope, URL_NORMALIZATION_SCOPES, URL_NORMALIZATION_TYPES, Zone,
};
pub use rulesets::{MAX_RULES, Position};
