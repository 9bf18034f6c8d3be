//! Unit tests that need a CA: issuance, sealing, CRLs, BYO CA, verification and facts together.

use time::{Duration, OffsetDateTime, macros::datetime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::*;

const RSA1024_CSR: &str = include_str!("../tests/data/rsa1024.csr");
const SECP256K1_CSR: &str = include_str!("../tests/data/secp256k1.csr");

fn now() -> OffsetDateTime {
    datetime!(2026-03-01 12:00:00 UTC)
}

fn ca() -> ManagedCa {
    ManagedCa::create(
        &CaParams {
            organization: Some("Acme, Inc.".into()),
            ..CaParams::default()
        },
        now(),
    )
    .unwrap()
}

fn csr_pem(params: rcgen::CertificateParams, key: &rcgen::KeyPair) -> String {
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn subject_csr() -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["device-1.example.com".to_owned()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CountryName, "US");
    p.distinguished_name.push(rcgen::DnType::StateOrProvinceName, "Texas");
    p.distinguished_name.push(rcgen::DnType::LocalityName, "Austin");
    p.distinguished_name.push(rcgen::DnType::OrganizationName, "Access");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "Access Admins");
    p.distinguished_name.push(rcgen::DnType::CommonName, "James Royal");
    p.subject_alt_names
        .push(rcgen::SanType::URI("spiffe://example.org/device/1".try_into().unwrap()));
    p.subject_alt_names
        .push(rcgen::SanType::Rfc822Name("james@example.com".try_into().unwrap()));
    p.subject_alt_names
        .push(rcgen::SanType::IpAddress("10.0.0.5".parse().unwrap()));
    p.subject_alt_names
        .push(rcgen::SanType::IpAddress("2001:db8::1".parse().unwrap()));
    (csr_pem(p, &key), key)
}

fn der(c: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from(c.to_vec())
}

#[test]
fn managed_ca_has_clear_subject_and_is_a_ca() {
    for key_type in [KeyType::P256, KeyType::P384, KeyType::Rsa2048] {
        let ca = ManagedCa::create(
            &CaParams {
                key_type,
                organization: Some("Org".into()),
                ..Default::default()
            },
            now(),
        )
        .unwrap();
        assert_eq!(ca.id().len(), 32);
        assert_eq!(ca.name(), format!("Portcullis Managed CA {}", &ca.id()[..8]));
        let (_, cert) = X509Certificate::from_der(ca.certificate_der()).unwrap();
        assert!(cert.is_ca());
        assert_eq!(dn::cloudflare(cert.subject()), format!("CN={},O=Org", ca.name()));
        assert!(ca.certificate_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    }
}

#[test]
fn sealed_key_round_trip_and_wrong_master_key() {
    let ca = ca();
    let master = MasterKey::generate();
    let sealed = ca.sealed_key(&master);
    let again = ManagedCa::from_sealed(ca.id(), ca.key_type(), ca.certificate_der(), &sealed, &master).unwrap();
    assert_eq!(again.name(), ca.name());
    // The reloaded CA can still issue.
    again
        .issue_with_generated_key(&generated("x"), &IssueOptions::default(), now())
        .unwrap();

    let err = ManagedCa::from_sealed(
        ca.id(),
        ca.key_type(),
        ca.certificate_der(),
        &sealed,
        &MasterKey::generate(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot unseal the CA private key: wrong master key, or the sealed data was changed or belongs to another CA"
    );
    let other = ManagedCa::create(&CaParams::default(), now()).unwrap();
    let err = ManagedCa::from_sealed(ca.id(), ca.key_type(), other.certificate_der(), &sealed, &master).unwrap_err();
    assert!(err.to_string().contains("does not match the CA certificate"), "{err}");
}

fn generated(cn: &str) -> GeneratedKeyRequest {
    GeneratedKeyRequest {
        key_type: KeyType::P256,
        subject: SubjectFields {
            common_name: cn.into(),
            country: "US".into(),
            ..Default::default()
        },
        sans: SubjectAltNames {
            dns: vec!["a.example".into()],
            uri: vec![],
            email: vec![],
            ip: vec![],
        },
    }
}

#[test]
fn generated_key_certificate_record_and_extensions() {
    let ca = ca();
    let issued = ca
        .issue_with_generated_key(&generated("device 7"), &IssueOptions::default(), now())
        .unwrap();
    let r = &issued.record;
    assert_eq!(r.id.len(), 32);
    assert!(r.id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(r.csr, "");
    assert_eq!(r.common_name, "device 7");
    assert_eq!(r.country, "US");
    assert_eq!(r.signature, "ECDSAWithSHA256");
    assert_eq!(r.issued_on, "2026-03-01T12:00:00Z");
    assert_eq!(r.expires_on, "2036-02-27T12:00:00Z");
    assert_eq!(r.validity_days, 3650);
    assert_eq!(r.status, CertificateStatus::Active);
    assert_eq!(r.serial_number.len(), 40, "20-byte serial");
    assert!(u8::from_str_radix(&r.serial_number[..2], 16).unwrap() < 0x80);
    assert_eq!(r.certificate_authority, ca.authority_ref());
    assert!(issued.private_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(!format!("{issued:?}").contains("BEGIN PRIVATE KEY"));

    let (_, cert) = X509Certificate::from_der(&issued.der).unwrap();
    assert!(!cert.is_ca());
    assert_eq!(cert.basic_constraints().unwrap().map(|b| b.value.ca), Some(false));
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let (_, ca_cert) = X509Certificate::from_der(ca.certificate_der()).unwrap();
    let ca_ski = facts::subject_key_id(&ca_cert).unwrap().to_vec();
    assert_eq!(r.ski, hex_lower(facts::subject_key_id(&cert).unwrap()));
    let json = serde_json_value(r);
    assert!(json.contains("\"status\":\"active\""), "{json}");
    assert!(json.contains("\"certificate_authority\":{\"id\":"), "{json}");
    let back: ClientCertificateRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, r);
    let facts = compute_facts(
        &[der(&issued.der)],
        &[IssuerInfo::from_der(ca.certificate_der()).unwrap()],
    );
    assert_eq!(facts.cert_issuer_ski, hex_upper(&ca_ski));
    assert_eq!(facts.cert_serial, r.serial_number.to_uppercase());
    assert_eq!(facts.cert_fingerprint_sha256, r.fingerprint_sha256);
}

fn serde_json_value<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn validity_days_bounds() {
    let ca = ca();
    for days in [0, 5476] {
        let err = ca
            .issue_with_generated_key(
                &generated("x"),
                &IssueOptions {
                    validity_days: days,
                    ..Default::default()
                },
                now(),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("validity_days must be between 1 and 5475 (got {days})")
        );
    }
    let short = ManagedCa::create(
        &CaParams {
            validity_days: 30,
            ..Default::default()
        },
        now(),
    )
    .unwrap();
    let err = short
        .issue_with_generated_key(&generated("x"), &IssueOptions::default(), now())
        .unwrap_err();
    assert!(err.to_string().contains("would outlive the CA"), "{err}");
}

#[test]
fn csr_subject_and_sans_are_copied() {
    let ca = ca();
    let (pem, _) = subject_csr();
    let issued = ca
        .issue_from_csr(
            pem.as_bytes(),
            &IssueOptions {
                validity_days: 30,
                crl_distribution_point: Some("http://crl.example/ca.crl".into()),
                ocsp_url: Some("http://ocsp.example/ca".into()),
                allowed_names: Vec::new(),
            },
            now(),
        )
        .unwrap();
    {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(&issued.der).unwrap();
        let aia = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityInfoAccess(aia) => Some(aia),
                _ => None,
            })
            .expect("an authority information access extension");
        let ocsp: Vec<_> = aia
            .accessdescs
            .iter()
            .filter(|d| d.access_method == oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP)
            .map(|d| format!("{:?}", d.access_location))
            .collect();
        assert_eq!(ocsp, [r#"URI("http://ocsp.example/ca")"#]);
    }
    let r = &issued.record;
    assert_eq!(
        (
            &*r.common_name,
            &*r.country,
            &*r.state,
            &*r.location,
            &*r.organization,
            &*r.organizational_unit
        ),
        ("James Royal", "US", "Texas", "Austin", "Access", "Access Admins")
    );
    assert!(r.csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let f = compute_facts(&[der(&issued.der)], &[]);
    assert_eq!(
        f.cert_subject_dn,
        "CN=James Royal,OU=Access Admins,O=Access,L=Austin,ST=Texas,C=US"
    );
    assert_eq!(
        f.cert_subject_dn_legacy,
        "/C=US/ST=Texas/L=Austin/O=Access/OU=Access Admins/CN=James Royal"
    );
    assert_eq!(f.san_dns, vec!["device-1.example.com"]);
    assert_eq!(f.san_uri, vec!["spiffe://example.org/device/1"]);
    assert_eq!(f.san_email, vec!["james@example.com"]);
    assert_eq!(f.san_ip, vec!["10.0.0.5", "2001:db8::1"]);
}

#[test]
fn name_policies_match_each_kind_within_its_parts() {
    use crate::name_policy::{NameKind, NamePolicy};
    let policy = |patterns: &[&str]| NamePolicy::parse(&patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>());
    let allows = |patterns: &[&str], kind: NameKind, name: &str| {
        policy(patterns).unwrap().check(&[(kind, name.to_owned())]).is_ok()
    };
    // DNS: `*` stays within a label; case is ignored.
    assert!(allows(
        &["dns:*.devices.example.com"],
        NameKind::Dns,
        "A.Devices.example.com"
    ));
    assert!(!allows(
        &["dns:*.devices.example.com"],
        NameKind::Dns,
        "a.b.devices.example.com"
    ));
    assert!(!allows(
        &["dns:*.devices.example.com"],
        NameKind::Dns,
        "devices.example.com"
    ));
    // URIs: `*` stays within a path segment, dot segments are refused, case counts.
    let spiffe = ["uri:spiffe://example.com/team-a/*"];
    assert!(allows(&spiffe, NameKind::Uri, "spiffe://example.com/team-a/svc"));
    assert!(!allows(&spiffe, NameKind::Uri, "spiffe://example.com/team-a/x/y"));
    assert!(!allows(&spiffe, NameKind::Uri, "spiffe://example.com/team-a/.."));
    assert!(!allows(
        &["uri:spiffe://example.com/*/*"],
        NameKind::Uri,
        "spiffe://example.com/team-a/%2E%2e"
    ));
    assert!(!allows(&spiffe, NameKind::Uri, "spiffe://example.com/TEAM-A/svc"));
    // A pattern allows names of its own kind only.
    assert!(!allows(
        &["dns:*.example.com"],
        NameKind::Uri,
        "spiffe://x/a.example.com"
    ));
    assert!(!allows(
        &["email:*@example.com"],
        NameKind::Uri,
        "spiffe://x/a@example.com"
    ));
    assert!(allows(&["email:*@example.com"], NameKind::Email, "ops@example.com"));
    assert!(!allows(&["email:*@example.com"], NameKind::Email, "a@b@example.com"));
    // Subject attributes: nothing that gives a DN its structure.
    assert!(allows(&["cn:device-*"], NameKind::Cn, "device-1.corp"));
    assert!(!allows(&["cn:device-*"], NameKind::Cn, "device-1,OU=admins"));
    assert!(!allows(&["cn:*"], NameKind::Cn, "a+OU=admins"));
    // IP addresses by CIDR, or one address.
    assert!(allows(&["ip:10.0.0.0/8"], NameKind::Ip, "10.1.2.3"));
    assert!(!allows(&["ip:10.0.0.0/8"], NameKind::Ip, "11.0.0.1"));
    assert!(allows(&["ip:2001:db8::/32"], NameKind::Ip, "2001:db8::1"));
    assert!(allows(&["ip:10.0.0.5"], NameKind::Ip, "10.0.0.5"));
    assert!(!allows(&["ip:10.0.0.5"], NameKind::Ip, "10.0.0.50"));
    // The glob's backtracking.
    for (pattern, name, want) in [
        ("cn:a*b*c", "aXXbYYc", true),
        ("cn:a*b*c", "aXXbYY", false),
        ("cn:*ab", "aab", true),
        ("cn:a*a", "a", false),
        ("cn:*a*b", "xaxxb", true),
        ("cn:**", "anything", true),
        ("cn:abcdef", "abc", false),
    ] {
        assert_eq!(allows(&[pattern], NameKind::Cn, name), want, "{pattern} {name}");
    }
    // Patterns name their kind.
    for bad in ["device-*", "host:x", "dns:", "ip:10.0.0.0/33", "ip:nope", "cn:a,b"] {
        assert!(policy(&[bad]).is_err(), "{bad}");
    }
    // A certificate must name something.
    let err = policy(&["o:*"])
        .unwrap()
        .check(&[(NameKind::O, "Acme".into())])
        .unwrap_err();
    assert!(
        err.to_string().starts_with("a certificate with neither a common name"),
        "{err}"
    );
}

#[test]
fn issuance_keeps_to_the_allowed_names() {
    let ca = ca();
    let (csr, _) = subject_csr();
    let allowing = |patterns: &[&str]| IssueOptions {
        allowed_names: patterns.iter().map(|p| (*p).to_owned()).collect(),
        ..IssueOptions::default()
    };
    // The CSR names C, ST, L, O, OU, CN, a DNS name, a SPIFFE ID, an email address and two addresses.
    let all = [
        "c:US",
        "st:Texas",
        "l:Austin",
        "o:Access",
        "ou:Access Admins",
        "cn:James Royal",
        "dns:*.example.com",
        "uri:spiffe://example.org/device/*",
        "email:*@example.com",
        "ip:10.0.0.0/24",
        "ip:2001:db8::/64",
    ];
    assert!(ca.issue_from_csr(csr.as_bytes(), &allowing(&all), now()).is_ok());
    for left_out in 0..all.len() {
        let mut fewer = all.to_vec();
        fewer.remove(left_out);
        let err = ca
            .issue_from_csr(csr.as_bytes(), &allowing(&fewer), now())
            .expect_err(all[left_out]);
        assert!(matches!(err, crate::PkiError::NameNotAllowed(_)), "{err}");
    }
    // A subject attribute no pattern can name (here emailAddress) is refused under a policy.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, "device-1");
    p.distinguished_name.push(
        rcgen::DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
        "root@corp.example",
    );
    let odd = csr_pem(p, &key);
    let err = ca
        .issue_from_csr(odd.as_bytes(), &allowing(&["cn:device-*"]), now())
        .unwrap_err();
    assert!(err.to_string().contains("1.2.840.113549.1.9.1"), "{err}");
    assert!(
        ca.issue_from_csr(odd.as_bytes(), &IssueOptions::default(), now())
            .is_ok(),
        "no policy, no check"
    );

    let err = ca
        .issue_with_generated_key(
            &generated("admin"),
            &allowing(&["cn:device-*", "dns:*.example", "c:US"]),
            now(),
        )
        .expect_err("admin");
    assert_eq!(
        err.to_string(),
        "the name \"cn:admin\" is not allowed by the zone's client certificate policy (allowed_names)"
    );
    assert!(
        ca.issue_with_generated_key(
            &generated("device-7"),
            &allowing(&["cn:device-*", "dns:*.example", "c:US"]),
            now()
        )
        .is_ok()
    );
    // Reactivation checks a stored certificate the same way.
    let issued = ca
        .issue_with_generated_key(&generated("device-8"), &IssueOptions::default(), now())
        .unwrap();
    let der = crate::pem::certificates_from_pem_or_der(issued.record.certificate.as_bytes()).unwrap();
    let names = crate::name_policy::certificate_names(&der[0]).unwrap();
    let strict = crate::name_policy::NamePolicy::parse(&["cn:device-*".to_owned(), "c:US".to_owned()]).unwrap();
    assert!(
        strict.check(&names).is_err(),
        "its DNS name a.example is not allowed: {names:?}"
    );
}

#[test]
fn csr_with_bad_signature_is_refused() {
    let ca = ca();
    let (pem_text, _) = subject_csr();
    let mut der = pem::parse_blocks(&pem_text).unwrap().remove(0).der;
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let err = ca.issue_from_csr(&der, &IssueOptions::default(), now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CSR signature is invalid: the signature does not match the public key"
    );
}

#[test]
fn weak_and_unsupported_keys_are_refused() {
    let ca = ca();
    let err = ca
        .issue_from_csr(RSA1024_CSR.as_bytes(), &IssueOptions::default(), now())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported or weak key: RSA key of 1024 bits is too small; at least 2048 bits are required"
    );
    let err = ca
        .issue_from_csr(SECP256K1_CSR.as_bytes(), &IssueOptions::default(), now())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported or weak key: elliptic curve secp256k1 is not supported; use P-256 or P-384"
    );
}

#[test]
fn garbage_and_truncated_csrs() {
    let ca = ca();
    let err = ca
        .issue_from_csr(b"hello", &IssueOptions::default(), now())
        .unwrap_err();
    assert!(err.to_string().starts_with("malformed CSR: "), "{err}");
    let (pem_text, _) = subject_csr();
    let der = pem::parse_blocks(&pem_text).unwrap().remove(0).der;
    let err = ca
        .issue_from_csr(&der[..der.len() / 2], &IssueOptions::default(), now())
        .unwrap_err();
    assert!(
        err.to_string().starts_with("malformed CSR: cannot parse the DER"),
        "{err}"
    );
    let err = ca
        .issue_from_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\n%%%%\n-----END CERTIFICATE REQUEST-----\n",
            &IssueOptions::default(),
            now(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("not valid base64"), "{err}");
}

#[test]
fn verification_outcomes() {
    let ca = ca();
    let other = ManagedCa::create(&CaParams::default(), now()).unwrap();
    let issued = ca
        .issue_with_generated_key(
            &generated("x"),
            &IssueOptions {
                validity_days: 30,
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    let chain = [der(&issued.der)];

    let mut b = VerifierBuilder::new();
    b.add_anchor(other.certificate_der()).unwrap();
    let ca_index = b.add_anchor(ca.certificate_der()).unwrap();
    let verifier = b.build();
    let v = verifier.verify(&chain, now() + Duration::hours(1));
    assert_eq!(
        (v.verified, v.revoked, v.reason.as_str(), v.status),
        (true, false, "SUCCESS", AuthStatus::Ok)
    );
    assert!(v.is_trusted());

    let v = verifier.verify(&chain, now() + Duration::days(31));
    assert_eq!(
        (v.verified, v.reason.as_str(), v.status),
        (false, "FAILED:certificate has expired", AuthStatus::Expired)
    );
    let v = verifier.verify(&chain, now() - Duration::days(1));
    assert_eq!(
        (v.verified, v.reason.as_str(), v.status),
        (false, "FAILED:certificate is not yet valid", AuthStatus::NotYetValid)
    );

    let mut b = VerifierBuilder::new();
    b.add_anchor(other.certificate_der()).unwrap();
    let v = b.build().verify(&chain, now());
    assert_eq!(
        (v.verified, v.reason.as_str()),
        (false, "FAILED:unable to get local issuer certificate")
    );
    let v = Verifier::empty().verify(&[der(ca.certificate_der())], now());
    assert_eq!(
        (v.reason.as_str(), v.status),
        ("FAILED:self signed certificate", AuthStatus::Untrusted)
    );

    // A certificate that is itself an anchor (self-signed, uploaded as its own CA) verifies, as in OpenSSL.
    let mut b = VerifierBuilder::new();
    b.add_anchor(other.certificate_der()).unwrap();
    let v = b.build().verify(&[der(other.certificate_der())], now());
    assert_eq!((v.verified, v.reason.as_str()), (true, "SUCCESS"));

    // Revoked by the store's serial set: still verified (Cloudflare semantics), and revoked.
    let mut b = VerifierBuilder::new();
    let i = b.add_anchor(ca.certificate_der()).unwrap();
    assert_eq!(i, 0);
    let serial = hex_decode(&issued.record.serial_number);
    b.revoke_serials(i, [serial]).unwrap();
    let v = b.build().verify(&chain, now());
    assert_eq!((v.verified, v.revoked, v.status), (true, true, AuthStatus::Revoked));
    assert!(!v.is_trusted());
    let _ = ca_index;
}

fn hex_decode(s: &str) -> Vec<u8> {
    der::unhex(s).unwrap()
}

#[test]
fn crl_revokes_and_is_checked_against_its_ca() {
    let ca = ca();
    let issued = ca
        .issue_with_generated_key(&generated("x"), &IssueOptions::default(), now())
        .unwrap();
    let entries = vec![
        RevokedEntry {
            serial: hex_decode(&issued.record.serial_number),
            revoked_at: now(),
            reason: Some(RevocationReason::KeyCompromise),
        },
        RevokedEntry {
            serial: vec![0x00, 0x80, 0x01],
            revoked_at: now(),
            reason: None,
        },
    ];
    let crl = ca
        .build_crl(
            &CrlParams {
                crl_number: 7,
                this_update: now(),
                next_update: now() + Duration::days(7),
            },
            &entries,
        )
        .unwrap();
    assert!(crl.pem().starts_with("-----BEGIN X509 CRL-----"));
    // What expiry metrics read.
    let next = crl_next_update(crl.der()).unwrap().unwrap();
    assert!(
        (next - (now() + Duration::days(7))).abs() < Duration::seconds(2),
        "{next}"
    );
    assert!(crl_next_update(b"not a crl").is_err());
    let (_, parsed) = X509Certificate::from_der(ca.certificate_der()).unwrap();
    assert_eq!(
        certificate_not_after(ca.certificate_pem().as_bytes())
            .unwrap()
            .unix_timestamp(),
        parsed.validity().not_after.timestamp()
    );
    assert!(certificate_not_after(b"").is_err());
    let (not_before, not_after) = crate::certificate_validity(ca.certificate_pem().as_bytes()).unwrap();
    assert_eq!(not_before.unix_timestamp(), parsed.validity().not_before.timestamp());
    assert_eq!(not_after.unix_timestamp(), parsed.validity().not_after.timestamp());
    let checked = check_crl_for_ca(ca.certificate_der(), crl.pem().as_bytes()).unwrap();
    assert_eq!(checked.entries, 2);
    assert_eq!(checked.revoked_serials[1], vec![0x80, 0x01]);

    let mut b = VerifierBuilder::new();
    b.add_anchor(ca.certificate_der()).unwrap();
    assert_eq!(b.add_crl(crl.der()).unwrap(), 2);
    let v = b.build().verify(&[der(&issued.der)], now());
    assert_eq!((v.verified, v.revoked), (true, true));

    let other = ManagedCa::create(&CaParams::default(), now()).unwrap();
    let err = check_crl_for_ca(other.certificate_der(), crl.der()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("CRL does not belong to this CA: it was issued by"),
        "{err}"
    );
    let mut b = VerifierBuilder::new();
    b.add_anchor(other.certificate_der()).unwrap();
    let err = b.add_crl(crl.der()).unwrap_err();
    assert!(
        err.to_string().contains("not issued by any of the trust anchors"),
        "{err}"
    );
    let err = check_crl_for_ca(ca.certificate_der(), &crl.der()[..40]).unwrap_err();
    assert!(err.to_string().starts_with("malformed CRL"), "{err}");

    let err = ca
        .build_crl(
            &CrlParams {
                crl_number: 1,
                this_update: now(),
                next_update: now(),
            },
            &[],
        )
        .unwrap_err();
    assert!(err.to_string().contains("nextUpdate must be after thisUpdate"));
    // An empty CRL is still a valid, signed CRL.
    let empty = ca
        .build_crl(
            &CrlParams {
                crl_number: 1,
                this_update: now(),
                next_update: now() + Duration::days(1),
            },
            &[],
        )
        .unwrap();
    assert_eq!(check_crl_for_ca(ca.certificate_der(), empty.der()).unwrap().entries, 0);
}

#[test]
fn rsa_and_p384_cas_sign_crls_and_certs() {
    for (key_type, sig) in [(KeyType::Rsa2048, "SHA256WithRSA"), (KeyType::P384, "ECDSAWithSHA384")] {
        let ca = ManagedCa::create(
            &CaParams {
                key_type,
                ..Default::default()
            },
            now(),
        )
        .unwrap();
        let issued = ca
            .issue_with_generated_key(&generated("x"), &IssueOptions::default(), now())
            .unwrap();
        assert_eq!(issued.record.signature, sig);
        let crl = ca
            .build_crl(
                &CrlParams {
                    crl_number: 1,
                    this_update: now(),
                    next_update: now() + Duration::days(1),
                },
                &[],
            )
            .unwrap();
        check_crl_for_ca(ca.certificate_der(), crl.der()).unwrap();
    }
}

#[test]
fn byo_ca_bundle_validation() {
    let ca = ca();
    let up = parse_ca_bundle(&ca.certificate_pem(), "my ca", now()).unwrap();
    assert_eq!(up.record.issuer, format!("CN={},O=Acme\\, Inc.", ca.name()));
    assert_eq!(up.record.signature, "ECDSAWithSHA256");
    assert!(up.record.ca);
    assert!(up.record.serial_number.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(up.record.uploaded_on, "2026-03-01T12:00:00Z");

    let leaf = ca
        .issue_with_generated_key(&generated("leafy"), &IssueOptions::default(), now())
        .unwrap();
    let err = parse_ca_bundle(&leaf.record.certificate, "x", now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a CA certificate: certificate 1 (CN=leafy,C=US) lacks basicConstraints CA:TRUE; upload the CA that issued your client certificates, not a client certificate"
    );
    let err = parse_ca_bundle(
        &format!("{}{}", ca.certificate_pem(), leaf.private_key_pem.as_str()),
        "x",
        now(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("block 2 is a private key (PRIVATE KEY)"),
        "{err}"
    );
    let (csr, _) = subject_csr();
    let err = parse_ca_bundle(&csr, "x", now()).unwrap_err();
    assert!(err.to_string().contains("is a certificate signing request"), "{err}");
    let err = parse_ca_bundle("garbage", "x", now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid PEM: no -----BEGIN CERTIFICATE----- block found"
    );

    let short = ManagedCa::create(
        &CaParams {
            validity_days: 1,
            ..Default::default()
        },
        now(),
    )
    .unwrap();
    let err = parse_ca_bundle(&short.certificate_pem(), "x", now() + Duration::days(2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "CA certificate is not valid now: certificate 1 (CN={}) expired on 2026-03-02T12:00:00Z",
            short.name()
        )
    );
    let mut truncated = ca.certificate_der().to_vec();
    truncated.truncate(truncated.len() / 2);
    let err = parse_ca_bundle(&pem::encode("CERTIFICATE", &truncated), "x", now()).unwrap_err();
    assert!(
        err.to_string().starts_with("malformed certificate: certificate 1:"),
        "{err}"
    );
}

#[test]
fn facts_formats() {
    let ca = ca();
    let issued = ca
        .issue_with_generated_key(&generated("x"), &IssueOptions::default(), now())
        .unwrap();
    let mut b = VerifierBuilder::new();
    b.add_anchor(ca.certificate_der()).unwrap();
    let verifier = b.build();
    let chain = [der(&issued.der), der(ca.certificate_der())];
    let f = verifier.client_auth(&chain, now());
    assert!(f.cert_presented && f.cert_verified && !f.cert_revoked);
    assert_eq!(
        verifier.client_auth_accepted(&chain),
        f,
        "an accepted chain's facts are the verified ones"
    );
    assert_eq!(f.cert_not_before, "Mar  1 12:00:00 2026 GMT");
    assert_eq!(f.cert_not_after, "Feb 27 12:00:00 2036 GMT");
    assert!(f.cert_rfc9440.starts_with(":MII") && f.cert_rfc9440.ends_with(':'));
    assert_eq!(f.cert_chain_rfc9440.matches(':').count(), 2);
    assert_eq!(f.cert_issuer_dn, format!("CN={},O=Acme\\, Inc.", ca.name()));
    assert_eq!(f.cert_issuer_dn_legacy, format!("/O=Acme, Inc./CN={}", ca.name()));
    assert_eq!(f.verify_result, "SUCCESS");
    assert_eq!(f.fields().len(), 29);
    assert_eq!(f.cert_spki_sha256.len(), 64);
    assert_eq!(f.fields().iter().filter(|(n, _)| n.starts_with("cf.")).count(), 21);

    // Over the limits: the values are empty and the flags are set.
    let big_leaf = vec![0x30; RFC9440_LEAF];
    let big = vec![der(&big_leaf), der(&vec![0x30; 7000]), der(&vec![0x30; 7000])];
    let f = compute_facts(&big, &[]);
    assert!(f.cert_rfc9440_too_large && f.cert_rfc9440.is_empty());
    assert!(f.cert_chain_rfc9440_too_large && f.cert_chain_rfc9440.is_empty());
}

const RFC9440_LEAF: usize = 8000;

#[test]
fn pkcs12_bundle_opens() {
    let ca = ca();
    let issued = ca
        .issue_with_generated_key(&generated("phone"), &IssueOptions::default(), now())
        .unwrap();
    let p12 = issued.to_pkcs12("s3cret", "phone", &[ca.certificate_der()]).unwrap();
    let store = p12_keystore::KeyStore::from_pkcs12(&p12, "s3cret", p12_keystore::Pkcs12ImportPolicy::Relaxed).unwrap();
    let (_, chain) = store.private_key_chain().unwrap();
    assert_eq!(chain.certs().len(), 2);
    assert!(p12_keystore::KeyStore::from_pkcs12(&p12, "wrong", p12_keystore::Pkcs12ImportPolicy::Relaxed).is_err());
    let err = issued.to_pkcs12("", "x", &[]).unwrap_err();
    assert_eq!(err.to_string(), "PKCS#12 export failed: the password must not be empty");
}

#[test]
fn csr_with_extension_requests_rcgen_would_refuse_is_signed() {
    let ca = ca();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, "ext");
    p.custom_extensions.push(rcgen::CustomExtension::from_oid_content(
        &[1, 2, 3, 4],
        vec![0x05, 0x00],
    ));
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issued = ca
        .issue_from_csr(csr_pem(p, &key).as_bytes(), &IssueOptions::default(), now())
        .unwrap();
    let (_, cert) = X509Certificate::from_der(&issued.der).unwrap();
    assert!(!cert.is_ca(), "the CA decides the extensions, not the CSR");
}

/// Untrusted input must never panic: every truncation and a bit flip at every position of a
/// certificate, a CSR and a CRL go through the parsers, the verifier and the facts.
#[test]
fn mangled_inputs_do_not_panic() {
    let ca = ca();
    let issued = ca
        .issue_with_generated_key(&generated("x"), &IssueOptions::default(), now())
        .unwrap();
    let (csr_pem, _) = subject_csr();
    let csr = pem::parse_blocks(&csr_pem).unwrap().remove(0).der;
    let crl = ca
        .build_crl(
            &CrlParams {
                crl_number: 3,
                this_update: now(),
                next_update: now() + Duration::days(1),
            },
            &[RevokedEntry {
                serial: vec![1, 2, 3],
                revoked_at: now(),
                reason: Some(RevocationReason::Superseded),
            }],
        )
        .unwrap();
    let mut b = VerifierBuilder::new();
    b.add_anchor(ca.certificate_der()).unwrap();
    let verifier = b.build();
    let anchors = [IssuerInfo::from_der(ca.certificate_der()).unwrap()];

    let variants = |data: &[u8]| -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (0..data.len()).map(|n| data[..n].to_vec()).collect();
        for i in 0..data.len() {
            let mut flipped = data.to_vec();
            flipped[i] ^= 0x81;
            out.push(flipped);
        }
        out
    };
    for cert in variants(&issued.der) {
        let chain = [der(&cert), der(&cert)];
        let _ = verifier.client_auth(&chain, now());
        let _ = compute_facts(&chain, &anchors);
        let _ = parse_ca_bundle(&pem::encode("CERTIFICATE", &cert), "x", now());
        let _ = VerifierBuilder::new().add_anchor(&cert);
    }
    for bad in variants(&csr) {
        let _ = ca.issue_from_csr(&bad, &IssueOptions::default(), now());
    }
    for bad in variants(crl.der()) {
        let _ = check_crl_for_ca(ca.certificate_der(), &bad);
    }
}

#[test]
fn shared_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ManagedCa>();
    assert_send_sync::<Verifier>();
    assert_send_sync::<MasterKey>();
    assert_send_sync::<ClientAuthFacts>();
}

/// A bundle of a root and its intermediate, leaves issued by the intermediate: the intermediate's CRL is accepted
/// with the root's in one upload, and revokes the leaf it lists (and no other).
/// rcgen parameters of a CA named `cn` that signs certificates and CRLs, valid from a day before `t` to 30 days after.
fn crl_signing_ca_params(cn: &str, t: OffsetDateTime) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.not_before = t - Duration::days(1);
    p.not_after = t + Duration::days(30);
    p
}

#[test]
fn a_bundles_intermediate_revokes_its_leaves_with_its_own_crl() {
    use rcgen::{
        CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyIdMethod,
        KeyPair, RevokedCertParams, SerialNumber,
    };
    let t = now();
    let ca_params = |cn: &str| crl_signing_ca_params(cn, t);
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("Partner Root").self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(ca_params("Partner Root"), &root_key);
    let inter_key = KeyPair::generate().unwrap();
    let inter = ca_params("Partner Issuing CA")
        .signed_by(&inter_key, &root_issuer)
        .unwrap();
    let inter_issuer = Issuer::new(ca_params("Partner Issuing CA"), &inter_key);
    let leaf = |cn: &str, serial: u64| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = t - Duration::days(1);
        p.not_after = t + Duration::days(10);
        p.signed_by(&key, &inter_issuer).unwrap()
    };
    let kept = leaf("kept", 1001);
    let gone = leaf("gone", 1002);
    let crl = |issuer: &Issuer<'_, &KeyPair>, serials: &[u64]| {
        CertificateRevocationListParams {
            this_update: t - Duration::hours(1),
            next_update: t + Duration::days(7),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: t - Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .pem()
        .unwrap()
    };
    let bundle = vec![root.der().to_vec(), inter.der().to_vec()];
    let both = format!("{}{}", crl(&root_issuer, &[]), crl(&inter_issuer, &[1002]));

    let checked = check_crls_for_bundle(&bundle, both.as_bytes()).unwrap();
    assert_eq!(checked.len(), 2);
    assert_eq!(checked[1].issuer, "CN=Partner Issuing CA");
    assert_eq!(checked[1].entries, 1);
    let twice = format!("{}{}", crl(&inter_issuer, &[]), crl(&inter_issuer, &[1002]));
    let err = check_crls_for_bundle(&bundle, twice.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("both from CN=Partner Issuing CA"), "{err}");
    let stranger_key = KeyPair::generate().unwrap();
    let stranger = Issuer::new(ca_params("Someone Else"), &stranger_key);
    let err = check_crls_for_bundle(&bundle, crl(&stranger, &[]).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CRL 1 was not issued by any certificate of the bundle"),
        "{err}"
    );
    assert_eq!(
        crl_next_update(both.as_bytes()).unwrap().map(|n| n.unix_timestamp()),
        Some((t + Duration::days(7)).unix_timestamp())
    );

    let mut builder = VerifierBuilder::new();
    builder.add_anchors_pem_or_der(root.pem().as_bytes()).unwrap();
    builder.add_anchors_pem_or_der(inter.pem().as_bytes()).unwrap();
    assert_eq!(builder.add_crls(both.as_bytes()).unwrap(), 1);
    let verifier = builder.build();
    let v = verifier.verify(&[der(kept.der()), der(inter.der())], t);
    assert!(v.verified && !v.revoked, "{v:?}");
    let v = verifier.verify(&[der(gone.der())], t);
    assert!(v.verified && v.revoked, "listed by the intermediate's CRL: {v:?}");
    let v = verifier.verify(&[der(gone.der()), der(inter.der())], t);
    assert!(
        v.verified && v.revoked,
        "also when the client sends the intermediate: {v:?}"
    );

    // The root's CRL revokes the intermediate: everything under it is revoked, whatever its own CRL says.
    let inter_serial = x509_parser::parse_x509_certificate(inter.der())
        .unwrap()
        .1
        .raw_serial()
        .to_vec();
    let revoke_inter = CertificateRevocationListParams {
        this_update: t - Duration::hours(1),
        next_update: t + Duration::days(7),
        crl_number: SerialNumber::from(2u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from_slice(&inter_serial),
            revocation_time: t - Duration::minutes(5),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&root_issuer)
    .unwrap()
    .pem()
    .unwrap();
    let mut builder = VerifierBuilder::new();
    builder.add_anchors_pem_or_der(root.pem().as_bytes()).unwrap();
    builder.add_anchors_pem_or_der(inter.pem().as_bytes()).unwrap();
    builder
        .add_crls(format!("{revoke_inter}{}", crl(&inter_issuer, &[])).as_bytes())
        .unwrap();
    let verifier = builder.build();
    let v = verifier.verify(&[der(kept.der())], t);
    assert!(v.verified && v.revoked, "under a revoked intermediate: {v:?}");
    // The intermediate itself, presented as a client certificate, is no client certificate.
    let v = verifier.verify(&[der(inter.der())], t);
    assert!(!v.verified, "a bundle's intermediate presented by a client: {v:?}");
}

/// A DER TLV with a definite length.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The end of the TLV that starts at `at`.
fn der_end(data: &[u8], at: usize) -> usize {
    let first = data[at + 1];
    if first < 0x80 {
        return at + 2 + usize::from(first);
    }
    let n = usize::from(first & 0x7f);
    let len = data[at + 2..at + 2 + n]
        .iter()
        .fold(0usize, |l, b| l << 8 | usize::from(*b));
    at + 2 + n + len
}

/// A CSR, validly signed, whose subject has an attribute type that is no valid object identifier (a first byte of
/// 0x78 or more decodes as the arcs 3.x): refused with an error, not a panic of the certificate encoder at signing.
#[test]
fn csr_subject_attribute_types_that_are_no_valid_oid_are_refused() {
    use rcgen::SigningKey as _;
    let ca = ca();
    for (patched, name) in [
        (&[0x06, 0x03, 0x78, 0x03, 0x04][..], "first byte 0x78"),
        (&[0x06, 0x03, 0x7f, 0x03, 0x04][..], "first byte 0x7f"),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, "odd");
        p.distinguished_name
            .push(rcgen::DnType::CustomDnType(vec![1, 2, 3, 4]), "x");
        let csr = p.serialize_request(&key).unwrap().der().to_vec();
        // CertificationRequest ::= SEQUENCE { info, algorithm, signature }
        let inner = if csr[1] < 0x80 {
            2
        } else {
            2 + usize::from(csr[1] & 0x7f)
        };
        let info_end = der_end(&csr, inner);
        let algorithm_end = der_end(&csr, info_end);
        let mut info = csr[inner..info_end].to_vec();
        let oid = [0x06, 0x03, 0x2a, 0x03, 0x04];
        let at = info
            .windows(oid.len())
            .position(|w| w == oid)
            .expect("the custom attribute type");
        info[at..at + oid.len()].copy_from_slice(patched);
        let signature = key.sign(&info).unwrap();
        let mut bits = vec![0u8];
        bits.extend(signature);
        let mut body = info.clone();
        body.extend_from_slice(&csr[info_end..algorithm_end]);
        body.extend(der_tlv(0x03, &bits));
        let forged = der_tlv(0x30, &body);
        let pem = pem::encode("CERTIFICATE REQUEST", &forged);
        let err = ca
            .issue_from_csr(pem.as_bytes(), &IssueOptions::default(), now())
            .expect_err(name);
        assert!(
            err.to_string().contains("not a valid object identifier"),
            "{name}: {err}"
        );
    }
}

/// A CRL limited to CA certificates lists none of the clients' revocations, so it is refused as the CA's CRL; one
/// limited to user certificates (client certificates are) or with only a distribution point is taken.
#[test]
fn crls_that_do_not_cover_the_clients_are_refused() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Partitioned CA");
    let cert = params.self_signed(&key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(cert.der(), &key).unwrap();
    let crl = |scope: Option<rcgen::CrlScope>, with_idp: bool| {
        rcgen::CertificateRevocationListParams {
            this_update: now(),
            next_update: now() + Duration::days(1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: with_idp.then(|| rcgen::CrlIssuingDistributionPoint {
                distribution_point: rcgen::CrlDistributionPoint {
                    uris: vec!["http://crl.example/ca.crl".into()],
                },
                scope,
            }),
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap()
        .der()
        .to_vec()
    };
    let err = check_crl_for_ca(cert.der(), &crl(Some(rcgen::CrlScope::CaCertsOnly), true)).unwrap_err();
    assert!(err.to_string().contains("only CA certificates"), "{err}");
    for (scope, with_idp) in [
        (Some(rcgen::CrlScope::UserCertsOnly), true),
        (None, true),
        (None, false),
    ] {
        check_crl_for_ca(cert.der(), &crl(scope, with_idp)).unwrap();
    }
}

/// `cert_issuer_serial` and `cert_issuer_ski` come from the certificate that issued the leaf: a certificate the
/// client adds with the issuer's name and no key id (or the leaf's authority key id) is not taken for it, whether
/// the issuer is an anchor or an intermediate the client sends.
#[test]
fn issuer_facts_are_not_taken_from_a_lookalike_the_client_sends() {
    let ca_params = |name: &str, serial: u64| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        p
    };
    let root_key = rcgen::KeyPair::generate().unwrap();
    let root = ca_params("Root", 0x11).self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &root_key).unwrap();
    let mid_key = rcgen::KeyPair::generate().unwrap();
    let mid = ca_params("Issuing", 0x22).signed_by(&mid_key, &root_issuer).unwrap();
    let mid_issuer = rcgen::Issuer::from_ca_cert_der(mid.der(), &mid_key).unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "device");
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &mid_issuer).unwrap();
    // Self-signed, with the intermediate's name and a serial of the client's choosing, and no key id.
    let fake_key = rcgen::KeyPair::generate().unwrap();
    let mut fake_params = ca_params("Issuing", 0x666);
    fake_params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(Vec::new());
    let fake = fake_params.self_signed(&fake_key).unwrap();
    let chain = [der(leaf.der()), der(fake.der()), der(mid.der())];
    let mid_serial = IssuerInfo::from_der(mid.der()).unwrap().serial;

    // The intermediate is not an anchor: the one whose key signed the leaf counts.
    let facts = compute_facts(&chain, &[IssuerInfo::from_der(root.der()).unwrap()]);
    assert_eq!(facts.cert_issuer_serial, mid_serial);
    assert_ne!(facts.cert_issuer_serial, "0666");
    // The intermediate is an anchor (as every certificate of an uploaded bundle is): the anchor counts.
    let facts = compute_facts(&chain, &[IssuerInfo::from_der(mid.der()).unwrap()]);
    assert_eq!(facts.cert_issuer_serial, mid_serial);
    // Only the lookalike: no issuer facts rather than its.
    let facts = compute_facts(&chain[..2], &[IssuerInfo::from_der(root.der()).unwrap()]);
    assert_eq!(facts.cert_issuer_serial, "");
}

/// An anchor a path ends at must itself be in force: an uploaded bundle's intermediate (an anchor, as every
/// certificate of a bundle is) past its validity, or one whose extended key usage leaves out client authentication,
/// vouches for no client, as OpenSSL decides; the same CA renewed with the same key still does.
#[test]
fn an_expired_or_server_only_anchor_vouches_for_no_client() {
    let ca_params = |name: &str, from: OffsetDateTime, to: OffsetDateTime, eku: Vec<rcgen::ExtendedKeyUsagePurpose>| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.not_before = from;
        p.not_after = to;
        p.extended_key_usages = eku;
        p
    };
    let t = now();
    let root_key = rcgen::KeyPair::generate().unwrap();
    let root = ca_params("Root", t - Duration::days(3650), t + Duration::days(3650), vec![])
        .self_signed(&root_key)
        .unwrap();
    let root_issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &root_key).unwrap();
    let mid_key = rcgen::KeyPair::generate().unwrap();
    let mid = |from, to, eku| {
        ca_params("Issuing", from, to, eku)
            .signed_by(&mid_key, &root_issuer)
            .unwrap()
    };
    let current = mid(t - Duration::days(30), t + Duration::days(30), vec![]);
    let expired = mid(t - Duration::days(60), t - Duration::days(1), vec![]);
    let server_only = mid(
        t - Duration::days(30),
        t + Duration::days(30),
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
    );
    let issuer = rcgen::Issuer::from_ca_cert_der(current.der(), &mid_key).unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "device");
    leaf_params.not_before = t - Duration::days(1);
    leaf_params.not_after = t + Duration::days(10);
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let verify = |anchors: &[&[u8]]| {
        let mut b = VerifierBuilder::new();
        for a in anchors {
            b.add_anchor(a).unwrap();
        }
        b.build().verify(&[der(leaf.der())], t)
    };
    assert!(verify(&[root.der(), current.der()]).verified);
    let v = verify(&[root.der(), expired.der()]);
    assert!(!v.verified, "an expired intermediate");
    assert_eq!(v.reason, "FAILED:certificate has expired");
    let v = verify(&[root.der(), server_only.der()]);
    assert!(!v.verified, "a server-only intermediate");
    assert_eq!(v.reason, "FAILED:unsupported certificate purpose");
    // Renewed with the same name and key: the current one keeps the path in force.
    assert!(verify(&[root.der(), expired.der(), current.der()]).verified);
}

#[test]
fn a_path_to_a_bundles_intermediate_is_held_to_the_roots_terms() {
    let t = now();
    let ca_params = |name: &str, constraint: rcgen::BasicConstraints| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(constraint);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.not_before = t - Duration::days(30);
        p.not_after = t + Duration::days(30);
        p
    };
    let leaf = |sans: Vec<String>, issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>| {
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "device");
        p.not_before = t - Duration::days(1);
        p.not_after = t + Duration::days(10);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&rcgen::KeyPair::generate().unwrap(), issuer).unwrap()
    };
    let verify = |anchors: &[&[u8]], chain: &[&[u8]]| {
        let mut b = VerifierBuilder::new();
        for a in anchors {
            b.add_anchor(a).unwrap();
        }
        let chain: Vec<_> = chain.iter().map(|c| der(c)).collect();
        b.build().verify(&chain, t)
    };

    // A root limited to good.example, and an unconstrained intermediate under it.
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = ca_params("Constrained Root", rcgen::BasicConstraints::Unconstrained);
    root_params.name_constraints = Some(rcgen::NameConstraints {
        permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("good.example".into())],
        excluded_subtrees: vec![],
    });
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &root_key).unwrap();
    let mid_key = rcgen::KeyPair::generate().unwrap();
    let mid = ca_params("Issuing", rcgen::BasicConstraints::Unconstrained)
        .signed_by(&mid_key, &root_issuer)
        .unwrap();
    let mid_issuer = rcgen::Issuer::from_ca_cert_der(mid.der(), &mid_key).unwrap();
    let inside = leaf(vec!["a.good.example".into()], &mid_issuer);
    let outside = leaf(vec!["evil.example".into()], &mid_issuer);

    assert!(verify(&[root.der(), mid.der()], &[inside.der()]).verified);
    let v = verify(&[root.der(), mid.der()], &[outside.der()]);
    assert!(
        !v.verified,
        "the root's name constraints apply through the bundle's intermediate"
    );
    assert_eq!(v.reason, "FAILED:permitted subtree violation");
    // The same with the intermediate sent by the client, and with the bundle in the other order.
    assert!(!verify(&[root.der(), mid.der()], &[outside.der(), mid.der()]).verified);
    assert!(!verify(&[mid.der(), root.der()], &[outside.der()]).verified);
    // An intermediate uploaded on its own is trusted on its own, as before.
    assert!(verify(&[mid.der()], &[outside.der()]).verified);

    // A root that allows no CA below it.
    let strict_key = rcgen::KeyPair::generate().unwrap();
    let strict = ca_params("Strict Root", rcgen::BasicConstraints::Constrained(0))
        .self_signed(&strict_key)
        .unwrap();
    let strict_issuer = rcgen::Issuer::from_ca_cert_der(strict.der(), &strict_key).unwrap();
    let sub_key = rcgen::KeyPair::generate().unwrap();
    let sub = ca_params("Sub", rcgen::BasicConstraints::Unconstrained)
        .signed_by(&sub_key, &strict_issuer)
        .unwrap();
    let sub_issuer = rcgen::Issuer::from_ca_cert_der(sub.der(), &sub_key).unwrap();
    let under_sub = leaf(vec![], &sub_issuer);
    let direct = leaf(vec![], &strict_issuer);
    assert!(verify(&[strict.der()], &[direct.der()]).verified);
    for (anchors, chain) in [
        (
            vec![strict.der().as_ref()],
            vec![under_sub.der().as_ref(), sub.der().as_ref()],
        ),
        (
            vec![strict.der().as_ref(), sub.der().as_ref()],
            vec![under_sub.der().as_ref()],
        ),
    ] {
        let v = verify(&anchors, &chain);
        assert!(!v.verified, "a CA below a root with path length 0");
        assert_eq!(v.reason, "FAILED:path length constraint exceeded");
    }
}

#[test]
fn a_certificate_revoked_at_the_edge_is_refused_by_issuer_and_serial_however_encoded() {
    let t = now();
    let ca_params = |cn: &str| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params("Own CA").self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), &ca_key).unwrap();
    let sub_key = rcgen::KeyPair::generate().unwrap();
    let sub = ca_params("Team CA").signed_by(&sub_key, &issuer).unwrap();
    let sub_issuer = rcgen::Issuer::from_ca_cert_der(sub.der(), &sub_key).unwrap();
    let leaf = |cn: &str, issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.not_before = t - Duration::days(1);
        p.not_after = t + Duration::days(10);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&rcgen::KeyPair::generate().unwrap(), issuer).unwrap()
    };
    let (lost, kept, under_sub) = (
        leaf("lost laptop", &issuer),
        leaf("desk", &issuer),
        leaf("team", &sub_issuer),
    );
    let bundle = ca.pem();
    let verifier = |deny: &[&[u8]]| {
        let mut b = VerifierBuilder::new();
        b.add_anchor(ca.der()).unwrap();
        for cert in deny {
            let id = byoca::issued_certificate(cert, bundle.as_bytes()).unwrap();
            b.deny(&id.issuer, &id.serial);
        }
        b.build()
    };
    let v = verifier(&[lost.der()]);
    let denied = v.verify(&[der(lost.der())], t);
    assert!(denied.verified && denied.revoked, "{denied:?}");
    assert_eq!(denied.status, AuthStatus::Revoked);
    assert!(v.client_auth(&[der(lost.der())], t).cert_revoked);
    assert!(v.verify(&[der(kept.der())], t).is_trusted());

    // The holder re-encodes the ECDSA signature (s → n − s, still valid): another fingerprint, still refused.
    let flipped = flip_ecdsa_s(lost.der());
    assert_ne!(flipped, lost.der().to_vec());
    let still = v.verify(&[CertificateDer::from(flipped.clone())], t);
    assert!(still.verified, "the re-encoded certificate verifies: {still:?}");
    assert!(still.revoked, "and is still revoked");

    // An intermediate revoked at the edge revokes what is under it, sent by the client or uploaded.
    let v = verifier(&[sub.der()]);
    let below = v.verify(&[der(under_sub.der()), der(sub.der())], t);
    assert!(below.verified && below.revoked, "{below:?}");
    assert!(v.verify(&[der(kept.der())], t).is_trusted());
    let mut b = VerifierBuilder::new();
    b.add_anchor(ca.der()).unwrap();
    let sub_index = b.add_anchor(sub.der()).unwrap();
    let id = byoca::issued_certificate(sub.der(), bundle.as_bytes()).unwrap();
    b.deny(&id.issuer, &id.serial);
    let v = b.build();
    assert!(
        v.verify(&[der(under_sub.der())], t).revoked,
        "under an uploaded intermediate"
    );

    // By serial alone, as issued by a certificate of the bundle.
    let mut b = VerifierBuilder::new();
    b.add_anchor(ca.der()).unwrap();
    b.add_anchor(sub.der()).unwrap();
    let serial = byoca::issued_certificate(under_sub.der(), sub.pem().as_bytes())
        .unwrap()
        .serial;
    b.deny_issued_by(sub_index, &serial).unwrap();
    let v = b.build();
    assert!(v.verify(&[der(under_sub.der())], t).revoked);
    assert!(v.verify(&[der(kept.der())], t).is_trusted());

    // Another CA's certificate is not this bundle's to revoke.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other = ca_params("Other CA").self_signed(&other_key).unwrap();
    let other_issuer = rcgen::Issuer::from_ca_cert_der(other.der(), &other_key).unwrap();
    let stranger = leaf("stranger", &other_issuer);
    let err = byoca::issued_certificate(stranger.der(), bundle.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("no certificate of this CA issued it"), "{err}");
}

/// `cert` (an ECDSA P-256-signed certificate) with its signature's `s` replaced by `n - s`: the other valid encoding
/// of the same signature, which anyone holding the certificate can make.
fn flip_ecdsa_s(cert: &[u8]) -> Vec<u8> {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
        0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
    ];
    let (_, parsed) = X509Certificate::from_der(cert).unwrap();
    let tbs_start = header_len(cert);
    let tbs_end = der_end(cert, tbs_start);
    let tbs = cert[tbs_start..tbs_end].to_vec();
    let alg_end = der_end(cert, tbs_end);
    let alg = cert[tbs_end..alg_end].to_vec();
    let sig = parsed.signature_value.data.to_vec();
    // ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }
    let r_start = header_len(&sig);
    let r_end = der_end(&sig, r_start);
    let r = sig[r_start..r_end].to_vec();
    let s_tlv = &sig[r_end..der_end(&sig, r_end)];
    let s_bytes = &s_tlv[header_len(s_tlv)..];
    let mut s = [0u8; 32];
    let trimmed: Vec<u8> = s_bytes.iter().copied().skip_while(|b| *b == 0).collect();
    s[32 - trimmed.len()..].copy_from_slice(&trimmed);
    let mut flipped = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        flipped[i] = (d + if d < 0 { 256 } else { 0 }) as u8;
    }
    let mut content: Vec<u8> = flipped.iter().copied().skip_while(|b| *b == 0).collect();
    if content.first().is_some_and(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    let mut seq = r;
    seq.extend(der_tlv(0x02, &content));
    let sig = der_tlv(0x30, &seq);
    let mut bits = vec![0u8];
    bits.extend(sig);
    let mut body = tbs;
    body.extend(alg);
    body.extend(der_tlv(0x03, &bits));
    der_tlv(0x30, &body)
}

/// The length of the DER header (tag and length) at the start of `data`.
fn header_len(data: &[u8]) -> usize {
    if data[1] & 0x80 == 0 {
        2
    } else {
        2 + usize::from(data[1] & 0x7f)
    }
}

#[test]
fn a_key_rollover_certificate_does_not_count_towards_path_length_and_cross_signed_cas_stand_alone() {
    let t = now();
    let ca_params = |cn: &str, constraint: rcgen::BasicConstraints| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(constraint);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p
    };
    let leaf_under = |issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "device");
        p.not_before = t - Duration::days(1);
        p.not_after = t + Duration::days(10);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&rcgen::KeyPair::generate().unwrap(), issuer).unwrap()
    };
    // A root allowing no CA below it, and its next key certified by the old one (same name: self-issued).
    let old_key = rcgen::KeyPair::generate().unwrap();
    let root = ca_params("Root", rcgen::BasicConstraints::Constrained(0))
        .self_signed(&old_key)
        .unwrap();
    let old_issuer = rcgen::Issuer::from_ca_cert_der(root.der(), &old_key).unwrap();
    let new_key = rcgen::KeyPair::generate().unwrap();
    let rollover = ca_params("Root", rcgen::BasicConstraints::Constrained(0))
        .signed_by(&new_key, &old_issuer)
        .unwrap();
    let new_issuer = rcgen::Issuer::from_ca_cert_der(rollover.der(), &new_key).unwrap();
    let leaf = leaf_under(&new_issuer);
    let mut b = VerifierBuilder::new();
    b.add_anchor(root.der()).unwrap();
    let v = b.build().verify(&[der(leaf.der()), der(rollover.der())], t);
    assert!(v.is_trusted(), "{v:?}");

    // Two CAs that certified each other, with no root uploaded: each vouches on its own.
    let (a_key, b_key) = (rcgen::KeyPair::generate().unwrap(), rcgen::KeyPair::generate().unwrap());
    let a_self = ca_params("A", rcgen::BasicConstraints::Unconstrained)
        .self_signed(&a_key)
        .unwrap();
    let b_self = ca_params("B", rcgen::BasicConstraints::Unconstrained)
        .self_signed(&b_key)
        .unwrap();
    let a_issuer = rcgen::Issuer::from_ca_cert_der(a_self.der(), &a_key).unwrap();
    let b_issuer = rcgen::Issuer::from_ca_cert_der(b_self.der(), &b_key).unwrap();
    let a_by_b = ca_params("A", rcgen::BasicConstraints::Unconstrained)
        .signed_by(&a_key, &b_issuer)
        .unwrap();
    let b_by_a = ca_params("B", rcgen::BasicConstraints::Unconstrained)
        .signed_by(&b_key, &a_issuer)
        .unwrap();
    let leaf = leaf_under(&a_issuer);
    let mut b = VerifierBuilder::new();
    b.add_anchor(a_by_b.der()).unwrap();
    b.add_anchor(b_by_a.der()).unwrap();
    let v = b.build().verify(&[der(leaf.der())], t);
    assert!(v.is_trusted(), "{v:?}");
}

#[test]
fn a_ca_with_a_critical_policy_constraint_can_have_its_certificates_revoked_at_the_edge() {
    let t = now();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Policy CA");
    // policyConstraints { requireExplicitPolicy 0 }, critical as RFC 5280 wants it: webpki's end-entity parser
    // refuses the certificate, trust anchors take it.
    let mut policy = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 36], vec![0x30, 0x03, 0x80, 0x01, 0x00]);
    policy.set_criticality(true);
    params.custom_extensions = vec![policy];
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), &key).unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "device");
    leaf_params.not_before = t - Duration::days(1);
    leaf_params.not_after = t + Duration::days(10);
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf_params
        .signed_by(&rcgen::KeyPair::generate().unwrap(), &issuer)
        .unwrap();
    let id = byoca::issued_certificate(leaf.der(), ca.pem().as_bytes()).expect("the leaf names its issuer");
    let mut b = VerifierBuilder::new();
    b.add_anchor(ca.der()).unwrap();
    assert!(b.build().verify(&[der(leaf.der())], t).is_trusted());
    let mut b = VerifierBuilder::new();
    let index = b.add_anchor(ca.der()).unwrap();
    b.deny_issued_by(index, &id.serial)
        .expect("by serial, as the CA issued it");
    let v = b.build().verify(&[der(leaf.der())], t);
    assert!(v.verified && v.revoked, "{v:?}");
}

#[test]
fn a_stale_crl_fails_closed_only_when_asked_after_its_grace() {
    let ca = ca();
    let issued = ca
        .issue_with_generated_key(
            &generated("x"),
            &IssueOptions {
                validity_days: 30,
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    let chain = [der(&issued.der)];
    // A CRL whose nextUpdate passed two hours ago, listing nothing.
    let crl = ca
        .build_crl(
            &CrlParams {
                crl_number: 1,
                this_update: now() - Duration::days(1),
                next_update: now() - Duration::hours(2),
            },
            &[],
        )
        .unwrap();
    let verify = |crl: Option<&[u8]>, grace: Option<i64>| {
        let mut b = VerifierBuilder::new();
        let index = b.add_anchor(ca.certificate_der()).unwrap();
        if let Some(crl) = crl {
            b.add_crl(crl).unwrap();
        }
        if let Some(grace) = grace {
            b.require_fresh_crl(index, grace).unwrap();
        }
        b.build().verify(&chain, now())
    };
    assert!(
        verify(Some(crl.der()), None).is_trusted(),
        "by default a stale CRL stays in use"
    );
    assert!(verify(Some(crl.der()), Some(3 * 3600)).is_trusted(), "within the grace");
    let v = verify(Some(crl.der()), Some(3600));
    assert!(!v.verified, "past the grace");
    assert_eq!(v.reason, "FAILED:CRL has expired");
    let v = verify(None, Some(3600));
    assert_eq!(v.reason, "FAILED:unable to get certificate CRL", "no CRL at all");
    assert!(verify(None, None).is_trusted());
}

#[test]
fn stale_crls_count_for_every_copy_of_a_ca_for_the_root_above_and_for_pinned_certificates() {
    use rcgen::{
        CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyIdMethod,
        KeyPair, SerialNumber,
    };
    let t = now();
    let ca_params = |cn: &str| crl_signing_ca_params(cn, t);
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("Fresh Root").self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(ca_params("Fresh Root"), &root_key);
    let inter_key = KeyPair::generate().unwrap();
    let inter = ca_params("Fresh Issuing CA")
        .signed_by(&inter_key, &root_issuer)
        .unwrap();
    let inter_issuer = Issuer::new(ca_params("Fresh Issuing CA"), &inter_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "device");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = t - Duration::days(1);
    p.not_after = t + Duration::days(10);
    let leaf = p.signed_by(&leaf_key, &inter_issuer).unwrap();
    let chain = [der(leaf.der())];
    let crl = |issuer: &Issuer<'_, &KeyPair>, next_update: OffsetDateTime| {
        CertificateRevocationListParams {
            this_update: next_update - Duration::days(1),
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .der()
        .to_vec()
    };
    let stale = |issuer| crl(issuer, t - Duration::hours(2));
    let fresh = |issuer| crl(issuer, t + Duration::hours(1));

    // The same CA uploaded twice, fail-closed on the second copy only: its CRL lands on the first, and the
    // strictest grace holds for both.
    let twice = |crls: &[Vec<u8>], grace: Option<i64>| {
        let mut b = VerifierBuilder::new();
        b.add_anchor(inter.der()).unwrap();
        let second = b.add_anchor(inter.der()).unwrap();
        for c in crls {
            b.add_crl(c).unwrap();
        }
        if let Some(grace) = grace {
            b.require_fresh_crl(second, grace).unwrap();
        }
        b.build().verify(&chain, t)
    };
    assert!(twice(&[stale(&inter_issuer)], None).is_trusted());
    assert_eq!(
        twice(&[stale(&inter_issuer)], Some(3600)).reason,
        "FAILED:CRL has expired"
    );
    assert!(
        twice(&[stale(&inter_issuer), fresh(&inter_issuer)], Some(3600)).is_trusted(),
        "the newest CRL counts"
    );

    // A path to the bundle's intermediate is carried up to the root, whose stale CRL fails it closed.
    let bundle = |root_crl: Vec<u8>, grace_on_root: Option<i64>| {
        let mut b = VerifierBuilder::new();
        let r = b.add_anchor(root.der()).unwrap();
        b.add_anchor(inter.der()).unwrap();
        b.add_crl(&root_crl).unwrap();
        b.add_crl(&fresh(&inter_issuer)).unwrap();
        if let Some(grace) = grace_on_root {
            b.require_fresh_crl(r, grace).unwrap();
        }
        b.build()
    };
    assert!(bundle(stale(&root_issuer), None).verify(&chain, t).is_trusted());
    assert_eq!(
        bundle(stale(&root_issuer), Some(3600)).verify(&chain, t).reason,
        "FAILED:CRL has expired"
    );
    let v = bundle(fresh(&root_issuer), Some(3600));
    assert!(v.verify(&chain, t).is_trusted());
    // Judged again when the root's CRL goes stale past its grace, sooner than when the leaf expires: trusted
    // up to that second, not at it.
    let crl_deadline = (t + Duration::hours(1)).unix_timestamp() + 3600 + 1;
    assert_eq!(v.recheck_at(&chain, t), Some(crl_deadline));
    let at = |unix: i64| OffsetDateTime::from_unix_timestamp(unix).unwrap();
    assert!(v.verify(&chain, at(crl_deadline - 1)).is_trusted());
    assert_eq!(v.verify(&chain, at(crl_deadline)).reason, "FAILED:CRL has expired");
    let without_grace = bundle(fresh(&root_issuer), None);
    let leaf_end = (t + Duration::days(10)).unix_timestamp() + 1;
    assert_eq!(without_grace.recheck_at(&chain, t), Some(leaf_end));
    assert!(
        !without_grace
            .verify(&chain, t + Duration::days(10) + Duration::seconds(1))
            .is_trusted(),
        "expired at the time recheck_at named"
    );

    // A self-signed certificate uploaded as its own CA needs a CRL of its own too.
    let pinned_key = KeyPair::generate().unwrap();
    let mut p = ca_params("Pinned Device");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let pinned = p.self_signed(&pinned_key).unwrap();
    let pinned_chain = [der(pinned.der())];
    let pinned_verifier = |grace: Option<i64>| {
        let mut b = VerifierBuilder::new();
        let i = b.add_anchor(pinned.der()).unwrap();
        if let Some(grace) = grace {
            b.require_fresh_crl(i, grace).unwrap();
        }
        b.build().verify(&pinned_chain, t)
    };
    assert!(pinned_verifier(None).is_trusted());
    assert_eq!(pinned_verifier(Some(0)).reason, "FAILED:unable to get certificate CRL");
}

#[test]
fn crl_distribution_points_name_http_urls_only() {
    use rcgen::{CertificateParams, CrlDistributionPoint, DnType, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "device");
    p.crl_distribution_points = vec![
        CrlDistributionPoint {
            uris: vec![
                "ldap://ldap.example/cn=CA,dc=example?certificateRevocationList".into(),
                "http://crl.example/ca.crl".into(),
            ],
        },
        CrlDistributionPoint {
            uris: vec!["HTTPS://crl.example/b.crl".into(), "http://mirror.example/b.crl".into()],
        },
        CrlDistributionPoint {
            uris: vec!["http://CRL.example/ca.crl".into()],
        },
    ];
    let with = p.self_signed(&key).unwrap();
    let without = CertificateParams::new(vec!["plain.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let both = format!("{}{}", without.pem(), with.pem());
    assert_eq!(
        crate::crl_distribution_points(both.as_bytes()).unwrap(),
        ["http://crl.example/ca.crl", "HTTPS://crl.example/b.crl"]
    );
    assert!(crate::crl_distribution_points(without.der()).unwrap().is_empty());
    assert!(crate::crl_distribution_points(b"not a certificate").is_err());
}

#[test]
fn a_root_cross_signed_by_a_ca_that_fails_closed_answers_for_itself() {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    let t = now();
    let x_key = KeyPair::generate().unwrap();
    let x = crl_signing_ca_params("Root X", t).self_signed(&x_key).unwrap();
    let x_issuer = Issuer::new(crl_signing_ca_params("Root X", t), &x_key);
    let y_key = KeyPair::generate().unwrap();
    let y = crl_signing_ca_params("Root Y", t).self_signed(&y_key).unwrap();
    let y_issuer = Issuer::new(crl_signing_ca_params("Root Y", t), &y_key);
    // X's name and key, certified by Y.
    let x_by_y = crl_signing_ca_params("Root X", t).signed_by(&x_key, &y_issuer).unwrap();
    let inter_key = KeyPair::generate().unwrap();
    let inter = crl_signing_ca_params("X Issuing CA", t)
        .signed_by(&inter_key, &x_issuer)
        .unwrap();
    let inter_issuer = Issuer::new(crl_signing_ca_params("X Issuing CA", t), &inter_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "device");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = t - Duration::days(1);
    p.not_after = t + Duration::days(10);
    let leaf = p.signed_by(&leaf_key, &inter_issuer).unwrap();
    let chain = [der(leaf.der())];
    let verifier = |grace_on_x: bool| {
        let mut b = VerifierBuilder::new();
        let xi = b.add_anchor(x.der()).unwrap();
        b.add_anchor(x_by_y.der()).unwrap();
        b.add_anchor(inter.der()).unwrap();
        // Y's own bundle fails closed and has no CRL: its clients are refused, X's are not.
        let yi = b.add_anchor(y.der()).unwrap();
        b.require_fresh_crl(yi, 0).unwrap();
        if grace_on_x {
            b.require_fresh_crl(xi, 0).unwrap();
        }
        b.build()
    };
    assert!(
        verifier(false).verify(&chain, t).is_trusted(),
        "{:?}",
        verifier(false).verify(&chain, t)
    );
    // The root the path rests on counts when it asks for a CRL itself.
    assert_eq!(
        verifier(true).verify(&chain, t).reason,
        "FAILED:unable to get certificate CRL"
    );
}

#[test]
fn a_renewal_csr_must_name_what_the_renewed_certificate_names() {
    let ca = ca();
    let (pem, _) = subject_csr();
    let issued = ca
        .issue_from_csr(pem.as_bytes(), &IssueOptions::default(), now())
        .unwrap();
    // The same names under a new key: a re-key.
    let (again, _) = subject_csr();
    est::check_renewal_csr(again.as_bytes(), &issued.der).unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let mut other = rcgen::CertificateParams::new(vec!["device-1.example.com".to_owned()]).unwrap();
    other.distinguished_name = rcgen::DistinguishedName::new();
    other.distinguished_name.push(rcgen::DnType::CommonName, "James Royal");
    let err = est::check_renewal_csr(csr_pem(other, &key).as_bytes(), &issued.der).unwrap_err();
    assert!(err.to_string().contains("is not the renewed certificate's"), "{err}");

    // The same subject with only one of the names.
    let mut fewer = rcgen::CertificateParams::new(vec!["device-1.example.com".to_owned()]).unwrap();
    fewer.distinguished_name = rcgen::DistinguishedName::new();
    for (ty, value) in [
        (rcgen::DnType::CountryName, "US"),
        (rcgen::DnType::StateOrProvinceName, "Texas"),
        (rcgen::DnType::LocalityName, "Austin"),
        (rcgen::DnType::OrganizationName, "Access"),
        (rcgen::DnType::OrganizationalUnitName, "Access Admins"),
        (rcgen::DnType::CommonName, "James Royal"),
    ] {
        fewer.distinguished_name.push(ty, value);
    }
    let err = est::check_renewal_csr(csr_pem(fewer, &key).as_bytes(), &issued.der).unwrap_err();
    assert!(
        err.to_string().contains("subject alternative names (dns:device-1.example.com) are not the renewed certificate's (dns:device-1.example.com, email:james@example.com, ip:10.0.0.5, ip:2001:db8::1, uri:spiffe://example.org/device/1)"),
        "{err}"
    );
    let plain = ca
        .issue_with_generated_key(&generated("plain"), &IssueOptions::default(), now())
        .unwrap();

    let p7 = est::pkcs7_certs_only(&[&plain.der, ca.certificate_der()]);
    let mut both = vec![plain.der.clone(), ca.certificate_der().to_vec()];
    both.sort();
    assert_eq!(est::pkcs7_certificates(&p7).unwrap(), both);
    assert!(est::pkcs7_certificates(&p7[..p7.len() - 1]).is_err());
    assert!(est::pkcs7_certificates(&plain.der).is_err());
}

#[test]
fn a_renewal_csr_made_from_a_certificate_passes_its_check_and_issues_the_same_names() {
    let ca = ca();
    let (pem, _) = subject_csr();
    let issued = ca
        .issue_from_csr(pem.as_bytes(), &IssueOptions::default(), now())
        .unwrap();
    let (csr, key) = est::renewal_csr(&issued.der, KeyType::P384).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    est::check_renewal_csr(&csr, &issued.der).unwrap();
    let renewed = ca.issue_from_csr(&csr, &IssueOptions::default(), now()).unwrap();
    let (_, a) = X509Certificate::from_der(&issued.der).unwrap();
    let (_, b) = X509Certificate::from_der(&renewed.der).unwrap();
    assert_eq!(a.subject().as_raw(), b.subject().as_raw());
    assert_eq!(
        a.subject_alternative_name().unwrap().unwrap().value,
        b.subject_alternative_name().unwrap().unwrap().value
    );
    assert_ne!(a.public_key().raw, b.public_key().raw);
}
