//! The PKI crate and `portcullis cert inspect`, cross-checked with the real `openssl` binary:
//! OpenSSL-made CSRs are signed, our certificates and CRLs pass `openssl verify`/`openssl crl`,
//! our DN strings, serials, SKIs, fingerprints and dates match what openssl prints, and our
//! PKCS#12 bundles open with `openssl pkcs12`.

// Helpers here are test code too; clippy's allow-unwrap-in-tests only covers `#[test]` bodies.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use portcullis_pki::{
    CaParams, CertificateDer, CrlParams, GeneratedKeyRequest, IssueOptions, KeyType, ManagedCa, RevocationReason,
    RevokedEntry, SubjectAltNames, SubjectFields, compute_facts,
};
use time::{Duration, OffsetDateTime};

use crate::support::{portcullis, scratch};

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs")
}

fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let out = openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("openssl prints UTF-8 here")
}

/// `key=value` output of `openssl x509 -noout -<field>`, without the `key=` part.
fn x509_field(dir: &Path, cert: &str, args: &[&str]) -> String {
    let mut all = vec!["x509", "-in", cert, "-noout"];
    all.extend_from_slice(args);
    let out = openssl_ok(dir, &all);
    let line = out.lines().next().unwrap_or_default();
    line.split_once('=').map(|(_, v)| v).unwrap_or(line).to_owned()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn managed_ca(dir: &Path) -> ManagedCa {
    let ca = ManagedCa::create(
        &CaParams {
            organization: Some("Portcullis Tests".into()),
            ..CaParams::default()
        },
        now(),
    )
    .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.certificate_pem()).unwrap();
    ca
}

fn generated(ca: &ManagedCa, cn: &str) -> portcullis_pki::IssuedWithKey {
    ca.issue_with_generated_key(
        &GeneratedKeyRequest {
            key_type: KeyType::P256,
            subject: SubjectFields {
                common_name: cn.into(),
                organization: "Acme".into(),
                ..Default::default()
            },
            sans: SubjectAltNames {
                dns: vec!["client.example".into()],
                ..Default::default()
            },
        },
        &IssueOptions::default(),
        now(),
    )
    .unwrap()
}

#[test]
fn openssl_csrs_are_signed_and_verify_as_client_certificates() {
    let dir = scratch();
    let d = dir.path();
    let ca = managed_ca(d);
    for (name, newkey) in [
        ("rsa", vec!["-newkey", "rsa:2048"]),
        ("ec", vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    ] {
        let mut args = vec!["req", "-new", "-nodes", "-keyout", "k.pem", "-out", "r.csr"];
        args.extend(newkey);
        args.extend([
            "-subj",
            "/C=GB/ST=London/L=London/O=Organization/OU=Unit/CN=CommonName",
            "-addext",
            "subjectAltName=DNS:device.example,URI:spiffe://example.org/device/1,email:dev@example.com",
            // An extension request rcgen's CSR parser refuses; the CA ignores it.
            "-addext",
            "1.2.3.4=ASN1:UTF8String:please",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ]);
        openssl_ok(d, &args);
        let csr = std::fs::read(d.join("r.csr")).unwrap();
        let issued = ca
            .issue_from_csr(
                &csr,
                &IssueOptions {
                    validity_days: 30,
                    ..Default::default()
                },
                now(),
            )
            .unwrap();
        let cert = format!("{name}.pem");
        std::fs::write(d.join(&cert), &issued.record.certificate).unwrap();

        let out = openssl_ok(d, &["verify", "-purpose", "sslclient", "-CAfile", "ca.pem", &cert]);
        assert_eq!(out.trim(), format!("{cert}: OK"));
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
            ("CommonName", "GB", "London", "London", "Organization", "Unit")
        );
        assert_eq!(
            r.signature, "ECDSAWithSHA256",
            "the signature of the issued cert is the CA's"
        );
        let text = openssl_ok(d, &["x509", "-in", &cert, "-noout", "-text"]);
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(
            text.contains("TLS Web Client Authentication") && !text.contains("Server Authentication"),
            "{text}"
        );
        assert!(
            text.contains("Digital Signature") && !text.contains("Certificate Sign"),
            "{text}"
        );
        assert!(text.contains("URI:spiffe://example.org/device/1"), "{text}");
        assert!(
            text.contains("DNS:device.example") && text.contains("email:dev@example.com"),
            "{text}"
        );
        assert!(
            !text.contains("1.2.3.4"),
            "CSR extension requests are not copied: {text}"
        );
        assert!(text.contains("Authority Key Identifier"), "{text}");

        // Record fields against openssl's view of the same certificate.
        let serial = x509_field(d, &cert, &["-serial"]);
        assert_eq!(serial.len(), 40);
        assert_eq!(r.serial_number, serial.to_lowercase());
        let fp = x509_field(d, &cert, &["-fingerprint", "-sha256"]);
        assert_eq!(r.fingerprint_sha256, fp.replace(':', "").to_lowercase());
        let ski = openssl_ok(d, &["x509", "-in", &cert, "-noout", "-ext", "subjectKeyIdentifier"]);
        let ski = ski.lines().nth(1).unwrap().trim().replace(':', "");
        assert_eq!(r.ski, ski.to_lowercase());
    }
}

#[test]
fn crls_verify_with_openssl_and_revoke() {
    let dir = scratch();
    let d = dir.path();
    let ca = managed_ca(d);
    let revoked = generated(&ca, "revoked one");
    let good = generated(&ca, "good one");
    std::fs::write(d.join("revoked.pem"), &revoked.record.certificate).unwrap();
    std::fs::write(d.join("good.pem"), &good.record.certificate).unwrap();
    let serial = hex(&revoked.record.serial_number);
    let entries = vec![RevokedEntry {
        serial,
        revoked_at: now(),
        reason: Some(RevocationReason::KeyCompromise),
    }];
    let crl = ca
        .build_crl(
            &CrlParams {
                crl_number: 42,
                this_update: now(),
                next_update: now() + Duration::days(7),
            },
            &entries,
        )
        .unwrap();
    std::fs::write(d.join("crl.pem"), crl.pem()).unwrap();

    let out = openssl(d, &["crl", "-in", "crl.pem", "-noout", "-verify", "-CAfile", "ca.pem"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("verify OK"), "{out:?}");
    let text = openssl_ok(d, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(text.contains("Version 2"), "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                42") || text.contains("42"),
        "{text}"
    );
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(text.contains(&revoked.record.serial_number.to_uppercase()), "{text}");

    let out = openssl(
        d,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "ca.pem",
            "revoked.pem",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("certificate revoked")
            || String::from_utf8_lossy(&out.stderr).contains("certificate revoked"),
        "{out:?}"
    );
    let out = openssl_ok(
        d,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "ca.pem",
            "good.pem",
        ],
    );
    assert_eq!(out.trim(), "good.pem: OK");

    // DER CRL too.
    std::fs::write(d.join("crl.der"), crl.der()).unwrap();
    openssl_ok(d, &["crl", "-inform", "DER", "-in", "crl.der", "-noout"]);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn dn_strings_and_facts_match_openssl() {
    let dir = scratch();
    let d = dir.path();
    let subjects = [
        "/C=US/ST=Texas/L=Austin/O=Access/OU=Access Admins/CN=James Royal",
        "/C=CH/ST=Baden-Württemberg/L=Zürich, \"old\"/O=a\\/b;c<d>/OU=x\\+y/CN=Jö Ω+UID=u1/emailAddress=ops@example.com",
        "/DC=org/DC=example/O=Acme\\, Inc./CN= #lead\\\\back trail /title=tab\tx",
        "/CN=日本語 テスト/serialNumber=42/GN=Ann/SN=Lee",
    ];
    for (i, subj) in subjects.iter().enumerate() {
        let cert = format!("s{i}.pem");
        openssl_ok(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "k.pem",
                "-out",
                &cert,
                "-days",
                "3",
                "-utf8",
                "-multivalue-rdn",
                "-subj",
                subj,
            ],
        );
        let pem = std::fs::read(d.join(&cert)).unwrap();
        let der = portcullis_pki::pem::certificates_from_pem_or_der(&pem)
            .unwrap()
            .remove(0);
        let facts = compute_facts(&[CertificateDer::from(der)], &[]);
        let rfc2253 = x509_field(d, &cert, &["-subject", "-nameopt", "RFC2253"]);
        assert_eq!(facts.cert_subject_dn_rfc2253, rfc2253, "subject {subj}");
        assert_eq!(
            facts.cert_issuer_dn_rfc2253,
            x509_field(d, &cert, &["-issuer", "-nameopt", "RFC2253"])
        );
        let compat = x509_field(d, &cert, &["-subject", "-nameopt", "compat"]);
        assert_eq!(facts.cert_subject_dn_legacy, compat, "subject {subj}");
        let readable = x509_field(d, &cert, &["-subject", "-nameopt", "RFC2253,-esc_msb"]);
        assert_eq!(facts.cert_subject_dn, readable, "subject {subj}");
        assert_eq!(facts.cert_serial, x509_field(d, &cert, &["-serial"]));
        assert_eq!(
            facts.cert_fingerprint_sha256,
            x509_field(d, &cert, &["-fingerprint", "-sha256"])
                .replace(':', "")
                .to_lowercase()
        );
        assert_eq!(
            facts.cert_fingerprint_sha1,
            x509_field(d, &cert, &["-fingerprint", "-sha1"])
                .replace(':', "")
                .to_lowercase()
        );
        assert_eq!(facts.cert_not_before, x509_field(d, &cert, &["-startdate"]));
        assert_eq!(facts.cert_not_after, x509_field(d, &cert, &["-enddate"]));
        let ski = openssl_ok(d, &["x509", "-in", &cert, "-noout", "-ext", "subjectKeyIdentifier"]);
        assert_eq!(facts.cert_ski, ski.lines().nth(1).unwrap().trim().replace(':', ""));
        // The public-key pin: SHA-256 of the DER SubjectPublicKeyInfo, as openssl extracts it.
        openssl_ok(d, &["x509", "-in", &cert, "-noout", "-pubkey", "-out", "spki.pem"]);
        openssl_ok(
            d,
            &[
                "pkey", "-pubin", "-in", "spki.pem", "-outform", "DER", "-out", "spki.der",
            ],
        );
        let digest = openssl_ok(d, &["dgst", "-sha256", "-r", "spki.der"]);
        assert_eq!(facts.cert_spki_sha256, digest.split_whitespace().next().unwrap());
    }
}

/// An attribute type OpenSSL has no name for: dotted OID, and `#` plus DER hex in RFC 2253.
#[test]
fn dn_with_unknown_attribute_type_matches_openssl() {
    let dir = scratch();
    let d = dir.path();
    let cnf = "oid_section = new_oids\n[new_oids]\nmyattr = 1.2.3.4\n[req]\ndistinguished_name = dn\n[dn]\n";
    std::fs::write(d.join("oid.cnf"), cnf).unwrap();
    openssl_ok(
        d,
        &[
            "req",
            "-config",
            "oid.cnf",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "1",
            "-subj",
            "/CN=x/myattr=custom",
        ],
    );
    let der = read_der(&std::fs::read(d.join("c.pem")).unwrap());
    let facts = compute_facts(&[CertificateDer::from(der)], &[]);
    assert_eq!(
        facts.cert_subject_dn_rfc2253,
        x509_field(d, "c.pem", &["-subject", "-nameopt", "RFC2253"])
    );
    assert_eq!(facts.cert_subject_dn_rfc2253, "1.2.3.4=#0C06637573746F6D,CN=x");
    assert_eq!(
        facts.cert_subject_dn_legacy,
        x509_field(d, "c.pem", &["-subject", "-nameopt", "compat"])
    );
}

#[test]
fn pkcs12_opens_with_openssl() {
    let dir = scratch();
    let d = dir.path();
    let ca = managed_ca(d);
    for key_type in [KeyType::P256, KeyType::Rsa2048] {
        let issued = ca
            .issue_with_generated_key(
                &GeneratedKeyRequest {
                    key_type,
                    subject: SubjectFields {
                        common_name: "phone".into(),
                        ..Default::default()
                    },
                    sans: SubjectAltNames::default(),
                },
                &IssueOptions::default(),
                now(),
            )
            .unwrap();
        let p12 = issued
            .to_pkcs12("s3cret pass", "phone", &[ca.certificate_der()])
            .unwrap();
        std::fs::write(d.join("c.p12"), p12).unwrap();
        let out = openssl(
            d,
            &[
                "pkcs12",
                "-info",
                "-nodes",
                "-in",
                "c.p12",
                "-passin",
                "pass:s3cret pass",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("-----BEGIN PRIVATE KEY-----"), "{stdout}");
        assert_eq!(stdout.matches("-----BEGIN CERTIFICATE-----").count(), 2, "{stdout}");
        assert!(stderr.contains("PBES2, PBKDF2, AES-256-CBC"), "{stderr}");
        let out = openssl(
            d,
            &["pkcs12", "-info", "-nodes", "-in", "c.p12", "-passin", "pass:wrong"],
        );
        assert!(!out.status.success());
    }
}

#[test]
fn inspect_exit_codes_and_output() {
    let dir = scratch();
    let d = dir.path();
    let ca = managed_ca(d);
    let good = generated(&ca, "good");
    let bad = generated(&ca, "revoked");
    std::fs::write(d.join("good.pem"), &good.record.certificate).unwrap();
    std::fs::write(d.join("bad.pem"), &bad.record.certificate).unwrap();
    let crl = ca
        .build_crl(
            &CrlParams {
                crl_number: 1,
                this_update: now(),
                next_update: now() + Duration::days(1),
            },
            &[RevokedEntry {
                serial: hex(&bad.record.serial_number),
                revoked_at: now(),
                reason: None,
            }],
        )
        .unwrap();
    std::fs::write(d.join("ca.crl"), crl.der()).unwrap();
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();

    let out = portcullis(&[
        "cert",
        "inspect",
        &path("good.pem"),
        "--ca",
        &path("ca.pem"),
        "--crl",
        &path("ca.crl"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: std::collections::HashMap<&str, &str> = stdout
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(k, v)| (k.trim(), v.trim())))
        .collect();
    assert_eq!(lines["cf.tls_client_auth.cert_verified"], "true", "{stdout}");
    assert_eq!(
        lines["cf.tls_client_auth.cert_serial"],
        good.record.serial_number.to_uppercase()
    );
    assert_eq!(lines["cf.tls_client_auth.cert_chain_rfc9440"], "\"\"");
    assert_eq!(lines["portcullis.tls_client_auth.cert_san_dns"], "[\"client.example\"]");
    assert!(
        stdout.contains("verdict: presented=true verified=true revoked=false reason=SUCCESS status=ok"),
        "{stdout}"
    );

    let out = portcullis(&[
        "cert",
        "inspect",
        &path("bad.pem"),
        "--ca",
        &path("ca.pem"),
        "--crl",
        &path("ca.crl"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["cf.tls_client_auth.cert_verified"], true);
    assert_eq!(json["cf.tls_client_auth.cert_revoked"], true);
    assert_eq!(json["portcullis.tls_client_auth.cert_status"], "revoked");
    // NGINX's $ssl_client_verify for a revoked certificate, where Cloudflare's cert_verified stays true.
    assert_eq!(
        json["portcullis.tls_client_auth.verify_result"],
        "FAILED:certificate revoked"
    );
    assert_eq!(json["portcullis.tls_client_auth.verify_error"], "certificate revoked");
    assert_eq!(
        json["portcullis.tls_client_auth.cert_san_dns"],
        serde_json::json!(["client.example"])
    );
    assert_eq!(
        json.as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("cf.tls_client_auth."))
            .count(),
        21
    );

    let later = (now() + Duration::days(3651))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let out = portcullis(&[
        "cert",
        "inspect",
        &path("good.pem"),
        "--ca",
        &path("ca.pem"),
        "--at",
        &later,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["portcullis.tls_client_auth.verify_error"],
        "certificate has expired"
    );
    assert_eq!(json["portcullis.tls_client_auth.cert_status"], "expired");

    let out = portcullis(&["cert", "inspect", &path("good.pem")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("reason=FAILED:unable to get local issuer certificate status=untrusted")
    );

    let out = portcullis(&["cert", "inspect", &path("missing.pem"), "--ca", &path("ca.pem")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot read ") && stderr.contains("missing.pem"),
        "{stderr}"
    );

    std::fs::write(d.join("junk.pem"), "not a certificate").unwrap();
    let out = portcullis(&["cert", "inspect", &path("junk.pem")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.pem holds no certificate"));

    let out = portcullis(&["cert", "inspect", &path("good.pem"), "--at", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
}

const CHAIN_CNF: &str = "\
[int]
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
[leaf]
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=URI:spiffe://example.org/workload
[ca]
default_ca = CA_default
[CA_default]
database = index.txt
crlnumber = crlnumber
default_md = sha256
default_crl_days = 7
";

/// A bring-your-own hierarchy made by openssl: RSA root, P-384 intermediate, P-256 leaf sent with
/// its intermediate; a CRL made by `openssl ca` revoking the intermediate.
#[test]
fn byo_ca_chain_with_intermediate_and_openssl_crl() {
    let dir = scratch();
    let d = dir.path();
    std::fs::write(d.join("ext.cnf"), CHAIN_CNF).unwrap();
    let steps: [&[&str]; 5] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "30",
            "-subj",
            "/O=BYO Org/CN=BYO Root",
        ],
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            "int.key",
            "-out",
            "int.csr",
            "-subj",
            "/O=BYO Org/CN=BYO Intermediate",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-out",
            "int.pem",
            "-days",
            "20",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "int",
        ],
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=workload",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "int.pem",
            "-CAkey",
            "int.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "10",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "leaf",
        ],
    ];
    for args in steps {
        openssl_ok(d, args);
    }
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let first = |f: &str| {
        CertificateDer::from(
            portcullis_pki::pem::certificates_from_pem_or_der(&read(f))
                .unwrap()
                .remove(0),
        )
    };

    let up = portcullis_pki::parse_ca_bundle(&String::from_utf8(read("root.pem")).unwrap(), "byo", now()).unwrap();
    assert_eq!(up.record.issuer, "CN=BYO Root,O=BYO Org");
    assert_eq!(up.record.signature, "SHA256WithRSA");
    assert!(up.record.serial_number.bytes().all(|b| b.is_ascii_digit()));

    let mut builder = portcullis_pki::VerifierBuilder::new();
    builder.add_anchors_pem_or_der(&read("root.pem")).unwrap();
    let verifier = builder.build();
    let facts = verifier.client_auth(&[first("leaf.pem"), first("int.pem")], now());
    assert_eq!((facts.cert_verified, facts.verify_result.as_str()), (true, "SUCCESS"));
    assert_eq!(facts.cert_issuer_serial, x509_field(d, "int.pem", &["-serial"]));
    let int_ski = openssl_ok(d, &["x509", "-in", "int.pem", "-noout", "-ext", "subjectKeyIdentifier"]);
    assert_eq!(
        facts.cert_issuer_ski,
        int_ski.lines().nth(1).unwrap().trim().replace(':', "")
    );
    assert_eq!(facts.cert_issuer_dn, "CN=BYO Intermediate,O=BYO Org");
    assert!(facts.cert_chain_rfc9440.starts_with(":MII") && !facts.cert_chain_rfc9440.contains(", "));
    assert_eq!(facts.san_uri, vec!["spiffe://example.org/workload"]);
    let v = verifier.verify(&[first("leaf.pem")], now());
    assert_eq!(v.reason, "FAILED:unable to get local issuer certificate");

    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let out = portcullis(&[
        "cert",
        "inspect",
        &path("leaf.pem"),
        "--chain",
        &path("int.pem"),
        "--ca",
        &path("root.pem"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    // openssl ca revokes the intermediate; the root's CRL then marks the chain revoked.
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("crlnumber"), "01\n").unwrap();
    openssl_ok(
        d,
        &[
            "ca", "-config", "ext.cnf", "-keyfile", "root.key", "-cert", "root.pem", "-revoke", "int.pem",
        ],
    );
    openssl_ok(
        d,
        &[
            "ca", "-config", "ext.cnf", "-keyfile", "root.key", "-cert", "root.pem", "-gencrl", "-out", "root.crl",
        ],
    );
    let crl = portcullis_pki::check_crl_for_ca(&read_der(&read("root.pem")), &read("root.crl")).unwrap();
    assert_eq!(crl.entries, 1);
    let err = portcullis_pki::check_crl_for_ca(&read_der(&read("int.pem")), &read("root.crl")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("CRL does not belong to this CA: it was issued by CN=BYO Root,O=BYO Org"),
        "{err}"
    );
    let out = portcullis(&[
        "cert",
        "inspect",
        &path("leaf.pem"),
        "--chain",
        &path("int.pem"),
        "--ca",
        &path("root.pem"),
        "--crl",
        &path("root.crl"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            json["cf.tls_client_auth.cert_verified"].clone(),
            json["cf.tls_client_auth.cert_revoked"].clone()
        ),
        (true.into(), true.into())
    );
    // A CRL that no --ca signed is an input error.
    let out = portcullis(&[
        "cert",
        "inspect",
        &path("leaf.pem"),
        "--ca",
        &path("int.pem"),
        "--crl",
        &path("root.crl"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("root.crl: CRL not accepted"));
}

fn read_der(pem: &[u8]) -> Vec<u8> {
    portcullis_pki::pem::certificates_from_pem_or_der(pem)
        .unwrap()
        .remove(0)
}

/// What `cert inspect` prints (and what the proxy will put in the rules' context) uses the rules schema's names and
/// types, so that every fact is a field a rule can read.
#[test]
fn every_fact_is_a_rule_field_of_the_same_type() {
    use portcullis_pki::FactValue;
    let facts = portcullis_pki::ClientAuthFacts::default();
    let names: Vec<&str> = facts.fields().iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("cf.tls_client_auth.")).count(),
        21
    );
    for (name, value) in facts.fields() {
        let field = portcullis_rules::field_by_name(name).unwrap_or_else(|| panic!("{name} is not a rule field"));
        let want = match value {
            FactValue::Bool(_) => "Boolean",
            FactValue::Str(_) => "String",
            FactValue::Array(_) => "Array<String>",
        };
        assert_eq!(field.ty().to_string(), want, "{name}");
    }
}
