//! Benchmarks for the per-connection and per-revocation hot paths:
//! - `crl/100k`: building and signing a CRL with 100,000 entries (goal: well under a second);
//! - `facts/typical_leaf`: all `cf.tls_client_auth.*` values for a P-256 leaf (goal: under 20 µs);
//! - `verify/leaf`: chain verification against two anchors with a revoked-serial set.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_pki::{
    CaParams, CertificateDer, CrlParams, GeneratedKeyRequest, IssueOptions, IssuerInfo, ManagedCa, RevocationReason,
    RevokedEntry, SubjectAltNames, SubjectFields, VerifierBuilder, compute_facts,
};
use time::{Duration, OffsetDateTime};

fn setup() -> (ManagedCa, Vec<u8>, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let ca = ManagedCa::create(
        &CaParams {
            organization: Some("Bench Org".into()),
            ..CaParams::default()
        },
        now,
    )
    .expect("CA");
    let issued = ca
        .issue_with_generated_key(
            &GeneratedKeyRequest {
                subject: SubjectFields {
                    common_name: "device-0001".into(),
                    country: "US".into(),
                    state: "Texas".into(),
                    location: "Austin".into(),
                    organization: "Access".into(),
                    organizational_unit: "Access Admins".into(),
                },
                sans: SubjectAltNames {
                    dns: vec!["device-0001.example.com".into()],
                    uri: vec!["spiffe://example.org/device/0001".into()],
                    email: vec![],
                    ip: vec![],
                },
                ..Default::default()
            },
            &IssueOptions::default(),
            now,
        )
        .expect("leaf");
    (ca, issued.der, now)
}

fn crl(c: &mut Criterion) {
    let (ca, _, now) = setup();
    let entries: Vec<RevokedEntry> = (0u64..100_000)
        .map(|i| {
            let mut serial = [0x5au8; 20];
            serial[12..].copy_from_slice(&i.to_be_bytes());
            RevokedEntry {
                serial: serial.to_vec(),
                revoked_at: now,
                reason: Some(RevocationReason::KeyCompromise),
            }
        })
        .collect();
    let params = CrlParams {
        crl_number: 1,
        this_update: now,
        next_update: now + Duration::days(7),
    };
    let mut group = c.benchmark_group("crl");
    group.sample_size(10);
    group.bench_function("100k", |b| {
        b.iter(|| ca.build_crl(black_box(&params), black_box(&entries)).expect("CRL"))
    });
    group.finish();
}

fn facts(c: &mut Criterion) {
    let (ca, leaf, _) = setup();
    let anchors = [IssuerInfo::from_der(ca.certificate_der()).expect("anchor")];
    let chain = [CertificateDer::from(leaf)];
    c.bench_function("facts/typical_leaf", |b| {
        b.iter(|| compute_facts(black_box(&chain), black_box(&anchors)))
    });
}

fn verify(c: &mut Criterion) {
    let (ca, leaf, now) = setup();
    let other = ManagedCa::create(&CaParams::default(), now).expect("CA");
    let mut builder = VerifierBuilder::new();
    builder.add_anchor(other.certificate_der()).expect("anchor");
    let index = builder.add_anchor(ca.certificate_der()).expect("anchor");
    builder
        .revoke_serials(index, (0u32..10_000).map(|i| i.to_be_bytes()))
        .expect("serials");
    let verifier = builder.build();
    let chain = [CertificateDer::from(leaf)];
    c.bench_function("verify/leaf", |b| b.iter(|| verifier.verify(black_box(&chain), now)));
    c.bench_function("client_auth/leaf", |b| {
        b.iter(|| verifier.client_auth(black_box(&chain), now))
    });
}

criterion_group!(benches, crl, facts, verify);
criterion_main!(benches);
