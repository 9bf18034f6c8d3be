//! Certificate-side API tests, in-process on SQLite with real cryptography: CSRs, CAs and CRLs are made by the
//! `openssl` command line in a temporary directory, and what the API returns is checked with it again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::AdminSettings;
use crate::tests::{Api, error};

/// A temporary directory to run `openssl` in.
struct Tmp(tempfile::TempDir);

impl Tmp {
    fn new() -> Tmp {
        Tmp(tempfile::tempdir().expect("tempdir"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), contents).expect("write");
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read")
    }

    /// Runs `openssl args…` in the directory; panics with its output unless it succeeds. Returns stdout + stderr.
    fn openssl(&self, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.0.path())
            .output()
            .expect("run openssl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "openssl {args:?} failed: {text}");
        text
    }

    /// A CSR (PEM) for a new key of `newkey` (`ec` for P-256, or `rsa:2048`) with `subject`.
    fn csr(&self, name: &str, newkey: &str, subject: &str) -> String {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let mut args = vec!["req", "-new", "-newkey", newkey];
        if newkey == "ec" {
            args.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        args.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", subject]);
        self.openssl(&args);
        self.read(&csr)
    }

    /// A self-signed CA (`{name}.pem`, `{name}.key`, P-256) for `subject`, valid `days`.
    fn root_ca(&self, name: &str, subject: &str, days: &str) {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            days,
            "-subj",
            subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// Has the CA `ca` (see [`Tmp::root_ca`]) sign the CSR file `csr` into `out`, valid `days`, with the CSR's own
    /// extensions as `openssl x509 -req -copy_extensions copyall` copies them, and `extra` arguments.
    fn sign_ca(&self, csr: &str, ca: &str, days: &str, out: &str, extra: &[&str]) {
        let (key, pem) = (format!("{ca}.key"), format!("{ca}.pem"));
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            &pem,
            "-CAkey",
            &key,
            "-CAcreateserial",
            "-copy_extensions",
            "copyall",
            "-days",
            days,
            "-out",
            out,
        ];
        args.extend_from_slice(extra);
        self.openssl(&args);
    }

    /// A self-signed leaf (`CA:FALSE`) for `subject`, valid 30 days, with `extra` `-addext` values; returns the
    /// certificate and key PEM (`{name}.pem`, `{name}.key`).
    fn leaf(&self, name: &str, subject: &str, extra: &[&str]) -> (String, String) {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        args.extend(["-keyout", &key, "-out", &pem, "-subj", subject, "-days", "30"]);
        args.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
        for ext in extra {
            args.extend(["-addext", ext]);
        }
        self.openssl(&args);
        (self.read(&pem), self.read(&key))
    }

    /// A self-signed CA (`{name}.pem`, `{name}.key`).
    fn ca(&self, name: &str, subject: &str) -> String {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            subject,
            "-days",
            "30",
        ]);
        self.read(&pem)
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_owned()
}

fn result_shape(v: &Value) -> BTreeMap<String, &'static str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .iter()
        .map(|(k, v)| {
            let t = match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            (k.clone(), t)
        })
        .collect()
}

fn shape(pairs: &[(&str, &'static str)]) -> BTreeMap<String, &'static str> {
    pairs.iter().map(|(k, t)| ((*k).to_owned(), *t)).collect()
}

async fn account(api: &Api) -> String {
    api.store.account().await.expect("account").id
}

/// The managed CAs as listed by the API.
async fn managed_cas(api: &Api) -> Vec<Value> {
    let account = account(api).await;
    let (status, body) = api.get(&format!("/client/v4/accounts/{account}/managed_ca")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["result"].as_array().expect("list").clone()
}

async fn delete(api: &Api, path: &str) -> (StatusCode, Value) {
    api.delete(path).await
}

#[tokio::test]
async fn client_certificates_from_openssl_csrs_copy_the_subject() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let zone = api.zone("example.com").await;
    let ca = &managed_cas(&api).await[0];
    tmp.write("ca.pem", s(&ca["certificate"]));
    for (name, newkey, signature) in [("ec", "ec", "ECDSAWithSHA256"), ("rsa", "rsa:2048", "ECDSAWithSHA256")] {
        let subject = format!("/C=GB/ST=London/L=Camden/O=Acme Ltd/OU=Devices/CN=device-{name}");
        let csr = tmp.csr(name, newkey, &subject);
        let (status, body) = api
            .send(
                Method::POST,
                &format!("/client/v4/zones/{zone}/client_certificates"),
                json!({"csr": csr, "validity_days": 30}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let r = &body["result"];
        assert_eq!(r["common_name"], format!("device-{name}"));
        assert_eq!(
            (&r["country"], &r["state"], &r["location"]),
            (&json!("GB"), &json!("London"), &json!("Camden"))
        );
        assert_eq!(
            (&r["organization"], &r["organizational_unit"]),
            (&json!("Acme Ltd"), &json!("Devices"))
        );
        assert_eq!(r["status"], "active");
        assert_eq!(r["validity_days"], 30);
        assert_eq!(r["signature"], signature, "signed by the P-256 managed CA");
        assert_eq!(r["csr"], csr);
        assert_eq!(r["certificate_authority"]["id"], ca["id"]);
        assert!(r.get("private_key").is_none(), "no key for a CSR");

        // The certificate is real: openssl verifies it against the managed CA, and it holds the CSR's key.
        tmp.write(&format!("{name}.crt"), s(&r["certificate"]));
        let out = tmp.openssl(&["verify", "-CAfile", "ca.pem", &format!("{name}.crt")]);
        assert!(out.contains(": OK"), "{out}");
        let cert_key = tmp.openssl(&["x509", "-in", &format!("{name}.crt"), "-noout", "-pubkey"]);
        let csr_key = tmp.openssl(&["pkey", "-in", &format!("{name}.key"), "-pubout"]);
        assert_eq!(cert_key, csr_key);
        let subject_line = tmp.openssl(&["x509", "-in", &format!("{name}.crt"), "-noout", "-subject"]);
        assert!(
            subject_line.contains(&format!("OU = Devices, CN = device-{name}")),
            "{subject_line}"
        );
    }
}

#[tokio::test]
async fn generated_keys_are_returned_once_with_a_pkcs12() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let zone = api.zone("example.com").await;
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/client/v4/zones/{zone}/client_certificates"),
            json!({"generate_key": {"type": "p256"}, "common_name": "gen-1", "organization": "Acme",
                   "pkcs12_password": "s3cret"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let r = &body["result"];
    let key = s(&r["private_key"]);
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    let p12 = base64::engine::general_purpose::STANDARD
        .decode(s(&r["pkcs12"]))
        .expect("pkcs12 is base64");
    tmp.write("c.p12", p12);
    let out = tmp.openssl(&[
        "pkcs12",
        "-in",
        "c.p12",
        "-passin",
        "pass:s3cret",
        "-nokeys",
        "-clcerts",
    ]);
    assert!(out.contains("CN = gen-1"), "the bundle holds the certificate: {out}");
    tmp.write("k.pem", &key);
    tmp.write("c.pem", s(&r["certificate"]));
    assert_eq!(
        tmp.openssl(&["pkey", "-in", "k.pem", "-pubout"]),
        tmp.openssl(&["x509", "-in", "c.pem", "-noout", "-pubkey"]),
        "the returned key is the certificate's"
    );
    assert_eq!(r["csr"], "");

    let id = s(&r["id"]);
    let (status, got) = api
        .get(&format!("/client/v4/zones/{zone}/client_certificates/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["result"]["id"], json!(id));
    assert!(got["result"].get("private_key").is_none() && got["result"].get("pkcs12").is_none());
    let raw = got.to_string();
    assert!(!raw.contains("PRIVATE KEY"), "{raw}");
}

#[tokio::test]
async fn client_certificate_input_errors_name_the_field() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let zone = api.zone("example.com").await;
    let path = format!("/client/v4/zones/{zone}/client_certificates");
    let csr = tmp.csr("a", "ec", "/CN=a");
    for days in [0, 5476] {
        let (status, body) = api
            .send(Method::POST, &path, json!({"csr": csr, "validity_days": days}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error(&body),
            (1400, format!("validity_days must be between 1 and 5475 (got {days})"))
        );
    }
    let (status, body) = api
        .send(Method::POST, &path, json!({"csr": "not a csr", "validity_days": 30}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (code, message) = error(&body);
    assert_eq!(code, 1400);
    assert!(
        message.contains("CERTIFICATE REQUEST") || message.contains("CSR"),
        "{message}"
    );
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBaGVsbG8=\n-----END CERTIFICATE REQUEST-----\n";
    let (status, body) = api.send(Method::POST, &path, json!({"csr": garbage})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.starts_with("malformed CSR"), "{body}");
    let (status, body) = api.send(Method::POST, &path, json!({"generate_key": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body).1, "invalid parameter: the subject needs a common name");
    let (status, body) = api
        .send(
            Method::POST,
            &path,
            json!({"generate_key": {"type": "dsa"}, "common_name": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.contains("unknown key type \"dsa\""), "{body}");
    // A misspelt SAN kind, or an address that is not one, is refused rather than left out of the certificate.
    for (sans, expected) in [
        (json!({"ips": ["10.0.0.5"]}), "unknown field `ips`"),
        (json!({"ip": ["10.0.0.300"]}), "invalid IP address syntax"),
    ] {
        let (status, body) = api
            .send(
                Method::POST,
                &path,
                json!({"generate_key": {}, "common_name": "x", "subject_alt_names": sans}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error(&body).1.contains(expected), "{body}");
    }
    let (total, _) = api
        .store
        .list_client_certificates(&zone, &portcullis_store::ClientCertQuery::default(), 0, 10)
        .await
        .map(|(c, t)| (t, c))
        .expect("list");
    assert_eq!(total, 0, "nothing was stored");
}

#[tokio::test]
async fn listing_revoking_reactivating_and_the_quota() {
    let api = Api::with_settings(AdminSettings {
        client_certificate_quota: 2,
        ..AdminSettings::default()
    })
    .await;
    let zone = api.zone("example.com").await;
    let path = format!("/client/v4/zones/{zone}/client_certificates");
    let create = |cn: &'static str| {
        let path = path.clone();
        let api = &api;
        async move {
            api.send(
                Method::POST,
                &path,
                json!({"generate_key": {}, "common_name": cn, "validity_days": 7}),
            )
            .await
        }
    };
    let (status, first) = create("one").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first = s(&first["result"]["id"]);
    let (status, _) = create("two").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = create("three").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&body),
        (
            1445,
            "Hit maximum certificate allocation: 2 certificates per zone are allowed".into()
        )
    );

    // Revoke: status revoked; a second revoke is a conflict with a message.
    let (status, body) = delete(&api, &format!("{path}/{first}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["status"], "revoked");
    let (status, body) = delete(&api, &format!("{path}/{first}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (code, message) = error(&body);
    assert_eq!(code, 1409);
    assert!(message.contains("already revoked"), "{message}");

    // The revoked certificate freed a slot.
    let (status, body) = create("three").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, list) = api.get(&format!("{path}?status=active")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = list["result"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| s(&c["common_name"]))
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"two".to_owned()) && names.contains(&"three".to_owned()),
        "{names:?}"
    );
    assert_eq!(list["result_info"]["total_count"], 2);
    let (_, list) = api.get(&format!("{path}?status=revoked")).await;
    assert_eq!(list["result"][0]["id"], json!(first));
    assert_eq!(list["result_info"]["count"], 1);

    let (_, page1) = api.get(&format!("{path}?per_page=2&page=1")).await;
    assert_eq!(
        page1["result_info"],
        json!({"page": 1, "per_page": 2, "count": 2, "total_count": 3, "total_pages": 2})
    );
    let (_, page2) = api.get(&format!("{path}?status=all&per_page=2&page=2")).await;
    assert_eq!(page2["result_info"]["count"], 1);
    assert_eq!(page2["result"].as_array().expect("list").len(), 1);
    let mut ids: Vec<_> = page1["result"]
        .as_array()
        .expect("list")
        .iter()
        .chain(page2["result"].as_array().expect("list"))
        .map(|c| s(&c["id"]))
        .collect();
    // `offset` skips exactly that many, whatever the page size.
    let (_, skipped) = api.get(&format!("{path}?offset=1&limit=2")).await;
    let skipped_ids: Vec<_> = skipped["result"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| s(&c["id"]))
        .collect();
    assert_eq!(skipped_ids, [ids[1].clone(), ids[2].clone()]);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "pages do not overlap");
    let (status, body) = api.get(&format!("{path}?status=lost")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.contains("unknown status \"lost\""), "{body}");

    // Reactivating needs a free slot: the quota is full again.
    let (status, body) = api
        .send(Method::PATCH, &format!("{path}/{first}"), json!({"reactivate": true}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error(&body).0, 1445);
    let (_, two) = api.get(&format!("{path}?status=active")).await;
    let other = s(&two["result"][0]["id"]);
    let (status, _) = delete(&api, &format!("{path}/{other}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .send(Method::PATCH, &format!("{path}/{first}"), json!({"reactivate": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["status"], "active");
    let (status, body) = api
        .send(Method::PATCH, &format!("{path}/{first}"), json!({"reactivate": true}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Cloudflare documents the PATCH without a body; `{}` and no body at all reactivate too.
    for body in [Some("{}"), None] {
        let (status, _) = delete(&api, &format!("{path}/{first}")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, resp) = api
            .call(
                Method::PATCH,
                &format!("{path}/{first}"),
                Some(&api.write.clone()),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body:?}: {resp}");
        assert_eq!(resp["result"]["status"], "active");
    }
    let (status, body) = api
        .send(Method::PATCH, &format!("{path}/{first}"), json!({"reactivate": false}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn the_crl_lists_revoked_serials_and_verifies_with_openssl() {
    let api = Api::with_settings(AdminSettings {
        crl_base_url: Some("https://pki.example.net/".into()),
        ..AdminSettings::default()
    })
    .await;
    let tmp = Tmp::new();
    let zone = api.zone("example.com").await;
    let ca = &managed_cas(&api).await[0];
    let ca_id = s(&ca["id"]);
    tmp.write("ca.pem", s(&ca["certificate"]));
    let path = format!("/client/v4/zones/{zone}/client_certificates");
    let mut issued = Vec::new();
    for cn in ["keep", "revoke"] {
        let (status, body) = api
            .send(Method::POST, &path, json!({"generate_key": {}, "common_name": cn}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        issued.push(body["result"].clone());
    }
    tmp.write("leaf.pem", s(&issued[0]["certificate"]));
    let text = tmp.openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains("X509v3 CRL Distribution Points"), "{text}");
    assert!(
        text.contains(&format!("URI:https://pki.example.net/crl/{ca_id}.crl")),
        "{text}"
    );

    let (status, _) = delete(&api, &format!("{path}/{}", s(&issued[1]["id"]))).await;
    assert_eq!(status, StatusCode::OK);
    // No token: CRLs are public.
    let resp = {
        use axum::body::Body;
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .uri(format!("/crl/{ca_id}.crl"))
            .body(Body::empty())
            .expect("request");
        let resp = api.router.clone().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/pkix-crl");
        resp.into_body().collect().await.expect("body").to_bytes()
    };
    tmp.write("ca.crl", &resp);
    let out = tmp.openssl(&["crl", "-inform", "DER", "-in", "ca.crl", "-CAfile", "ca.pem", "-noout"]);
    assert!(out.contains("verify OK"), "{out}");
    let text = tmp.openssl(&["crl", "-inform", "DER", "-in", "ca.crl", "-noout", "-text"]);
    let revoked = s(&issued[1]["serial_number"]).to_ascii_uppercase();
    let kept = s(&issued[0]["serial_number"]).to_ascii_uppercase();
    assert!(text.contains(&format!("Serial Number: {revoked}")), "{text}");
    assert!(!text.contains(&kept), "{text}");

    let (status, body) = api
        .call(Method::GET, "/crl/ffffffffffffffffffffffffffffffff.crl", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&body).0, 7003);
    let (status, body) = api.call(Method::GET, &format!("/crl/{ca_id}"), None, None).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
}

#[tokio::test]
async fn managed_ca_rotation_and_retirement() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let account = account(&api).await;
    let base = format!("/client/v4/accounts/{account}/managed_ca");
    let before = managed_cas(&api).await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["status"], "active");
    assert!(s(&before[0]["certificate"]).starts_with("-----BEGIN CERTIFICATE-----"));
    let old = s(&before[0]["id"]);
    assert_eq!(before[0]["crl_path"], format!("/crl/{old}.crl"));

    let (status, body) = api.send(Method::POST, &format!("{base}/rotate"), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let new = s(&body["result"]["id"]);
    assert_ne!(new, old);
    assert_eq!(body["result"]["status"], "active");
    let after = managed_cas(&api).await;
    let status_of = |id: &str| {
        after
            .iter()
            .find(|c| c["id"] == json!(id))
            .map(|c| s(&c["status"]))
            .unwrap_or_default()
    };
    assert_eq!((status_of(&new), status_of(&old)), ("active".into(), "trusted".into()));

    // New certificates come from the new CA.
    let zone = api.zone("example.com").await;
    let (status, cert) = api
        .send(
            Method::POST,
            &format!("/client/v4/zones/{zone}/client_certificates"),
            json!({"generate_key": {}, "common_name": "after-rotation"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cert}");
    assert_eq!(cert["result"]["certificate_authority"]["id"], json!(new));
    tmp.write("new.pem", s(&body["result"]["certificate"]));
    tmp.write("old.pem", s(&before[0]["certificate"]));
    tmp.write("leaf.pem", s(&cert["result"]["certificate"]));
    assert!(
        tmp.openssl(&["verify", "-CAfile", "new.pem", "leaf.pem"])
            .contains(": OK")
    );
    let refused = Command::new("openssl")
        .args(["verify", "-CAfile", "old.pem", "leaf.pem"])
        .current_dir(tmp.0.path())
        .output()
        .expect("openssl");
    assert!(!refused.status.success(), "the old CA did not issue it");

    let (status, body) = delete(&api, &format!("{base}/{new}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error(&body).1.contains("active"), "{body}");
    let (status, body) = delete(&api, &format!("{base}/{old}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["status"], "retired");
    assert_eq!(body["result"]["id"], json!(old));
    // A retired CA publishes no CRL any more.
    let (status, _) = api.call(Method::GET, &format!("/crl/{old}.crl"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let wrong = "/client/v4/accounts/0123456789abcdef0123456789abcdef/managed_ca";
    let (status, body) = api.get(wrong).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
    let (status, body) = api.send(Method::POST, &format!("{wrong}/rotate"), json!({})).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
    assert_eq!(managed_cas(&api).await.len(), 2, "the refused rotation created nothing");
}

#[tokio::test]
async fn a_managed_ca_signed_by_an_openssl_root_issues_certificates_that_chain_to_it() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let account = account(&api).await;
    let base = format!("/client/v4/accounts/{account}/managed_ca/requests");
    let first = s(&managed_cas(&api).await[0]["id"]);

    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"common_name": "Acme Devices CA", "organization": "Acme", "key_type": "p384"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let request = s(&body["result"]["id"]);
    assert_eq!(body["result"]["name"], "Acme Devices CA");
    tmp.write("sub.csr", s(&body["result"]["csr"]));
    let (status, list) = api.get(&base).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["result"][0]["id"], json!(request));
    assert_eq!(managed_cas(&api).await.len(), 1, "a request is not a CA");

    // The operator's root, and what it signs: the CSR's own extensions, as `openssl x509 -req` copies them.
    tmp.root_ca("root", "/O=Acme/CN=Acme Root", "30");
    tmp.sign_ca("sub.csr", "root", "20", "sub.pem", &[]);
    let install = format!("{base}/{request}/install");

    // Refused, naming why, and nothing changes: no chain; the root's own certificate (another key); a private key.
    let (status, body) = api
        .send(Method::POST, &install, json!({"certificate": tmp.read("sub.pem")}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("no chain"), "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            &install,
            json!({"certificate": tmp.read("root.pem"), "chain": tmp.read("root.pem")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("is for another key"), "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            &install,
            json!({"certificate": tmp.read("sub.pem"), "chain": tmp.read("root.key")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("chain: block 1 is a PRIVATE KEY"), "{body}");
    // A subject the CA rewrote with two DC= (which certificates it signs could not name as their issuer), and a
    // certificate without a subject key identifier (which its CRLs name).
    tmp.sign_ca(
        "sub.csr",
        "root",
        "20",
        "dc.pem",
        &["-subj", "/DC=com/DC=example/CN=Acme Devices CA"],
    );
    let (status, body) = api
        .send(
            Method::POST,
            &install,
            json!({"certificate": tmp.read("dc.pem"), "chain": tmp.read("root.pem")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("cannot be reproduced as the issuer"), "{body}");
    tmp.write(
        "noski.ext",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=none\n\
         authorityKeyIdentifier=none\n",
    );
    tmp.openssl(&[
        "x509",
        "-req",
        "-in",
        "sub.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-extfile",
        "noski.ext",
        "-days",
        "20",
        "-out",
        "noski.pem",
    ]);
    let (status, body) = api
        .send(
            Method::POST,
            &install,
            json!({"certificate": tmp.read("noski.pem"), "chain": tmp.read("root.pem")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("no subjectKeyIdentifier"), "{body}");
    assert_eq!(managed_cas(&api).await.len(), 1);

    let (status, body) = api
        .send(
            Method::POST,
            &install,
            json!({"certificate": tmp.read("sub.pem"), "chain": tmp.read("root.pem")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ca = &body["result"];
    assert_eq!(
        (ca["id"].clone(), ca["status"].clone()),
        (json!(request), json!("active"))
    );
    assert_eq!(ca["name"], "Acme Devices CA");
    assert_eq!(ca["issuer"], "CN=Acme Root,O=Acme");
    assert_eq!(ca["key_type"], "p384");
    assert!(s(&ca["chain"]).starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let cas = managed_cas(&api).await;
    assert_eq!(cas.len(), 2);
    assert_eq!(cas[1]["id"], json!(first));
    assert_eq!(cas[1]["status"], "trusted");
    assert_eq!(cas[1]["chain"], "");
    let (_, list) = api.get(&base).await;
    assert_eq!(list["result"], json!([]), "installed: no longer waiting");
    let (status, body) = api
        .send(
            Method::POST,
            &install,
            json!({"certificate": tmp.read("sub.pem"), "chain": tmp.read("root.pem")}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Issued under it: the leaf chains to the root through the managed CA, the bundle carries the managed CA (not
    // the root), and the CA's CRL verifies under its certificate.
    let zone = api.zone("example.com").await;
    let (status, cert) = api
        .send(
            Method::POST,
            &format!("/client/v4/zones/{zone}/client_certificates"),
            json!({"generate_key": {}, "common_name": "device-9", "pkcs12_password": "pw"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cert}");
    assert_eq!(cert["result"]["certificate_authority"]["id"], json!(request));
    // The default validity shortens to the CA's life (20 days less the seconds since); one asked for does not.
    assert_eq!(cert["result"]["validity_days"], 19, "{cert}");
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/client/v4/zones/{zone}/client_certificates"),
            json!({"generate_key": {}, "common_name": "device-10", "validity_days": 30}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("would outlive the CA"), "{body}");
    tmp.write("leaf.pem", s(&cert["result"]["certificate"]));
    let verified = tmp.openssl(&["verify", "-CAfile", "root.pem", "-untrusted", "sub.pem", "leaf.pem"]);
    assert!(verified.contains(": OK"), "{verified}");
    let p12 = base64::engine::general_purpose::STANDARD
        .decode(s(&cert["result"]["pkcs12"]))
        .expect("base64");
    tmp.write("bundle.p12", p12);
    let certs = tmp.openssl(&["pkcs12", "-in", "bundle.p12", "-passin", "pass:pw", "-nokeys"]);
    assert_eq!(certs.matches("BEGIN CERTIFICATE").count(), 2, "{certs}");
    assert!(
        certs.contains("Acme Devices CA") && !certs.contains("subject=O = Acme, CN = Acme Root"),
        "{certs}"
    );
    let crl = {
        use axum::body::Body;
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .uri(format!("/crl/{request}.crl"))
            .body(Body::empty())
            .expect("request");
        let resp = api.router.clone().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.expect("body").to_bytes()
    };
    tmp.write("sub.crl", &crl);
    let checked = tmp.openssl(&[
        "crl", "-inform", "DER", "-in", "sub.crl", "-CAfile", "sub.pem", "-noout",
    ]);
    assert!(checked.contains("verify OK"), "{checked}");

    // Under a root that expires before the CA: the default validity ends before the root, and a longer one asked
    // for is refused, naming the chain.
    let (_, body) = api
        .send(Method::POST, &base, json!({"common_name": "Short Root Devices"}))
        .await;
    let short = s(&body["result"]["id"]);
    tmp.write("short.csr", s(&body["result"]["csr"]));
    tmp.root_ca("short-root", "/CN=Short Root", "10");
    tmp.sign_ca("short.csr", "short-root", "20", "short.pem", &[]);
    let (status, body) = api
        .send(
            Method::POST,
            &format!("{base}/{short}/install"),
            json!({"certificate": tmp.read("short.pem"), "chain": tmp.read("short-root.pem")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let issue_path = format!("/client/v4/zones/{zone}/client_certificates");
    let issue = |extra: Value| {
        let mut body = json!({"generate_key": {}, "common_name": "under-short-root"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        api.send(Method::POST, &issue_path, body)
    };
    let (status, body) = issue(json!({"validity_days": 15})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        error(&body).1.contains("would outlive the chain above the managed CA"),
        "{body}"
    );
    let (status, body) = issue(json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["result"]["validity_days"], 9, "{body}");

    // Deleting a request discards it.
    let (_, body) = api.send(Method::POST, &base, json!({})).await;
    let other = s(&body["result"]["id"]);
    let (status, _) = delete(&api, &format!("{base}/{other}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = delete(&api, &format!("{base}/{other}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.send(Method::POST, &base, json!({"common_name": ""})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// EST in-process: the client certificate comes as the listener passes it (`PeerCertificates`); a certificate
/// younger than `est_renew_after` is told when to come back.
#[tokio::test]
async fn est_waits_for_a_certificate_to_age_and_names_the_managed_cas() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let api = Api::new().await;
    let tmp = Tmp::new();
    let zone = api.zone("example.com").await;
    let (status, cert) = api
        .send(
            Method::POST,
            &format!("/client/v4/zones/{zone}/client_certificates"),
            json!({"generate_key": {}, "common_name": "young"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cert}");
    let der = portcullis_pki::pem::certificates_from_pem_or_der(s(&cert["result"]["certificate"]).as_bytes())
        .expect("pem")
        .remove(0);
    let csr = tmp.csr("young", "ec", "/CN=young");
    let call = |peer: Option<Vec<u8>>, method: Method, path: &str, body: String| {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .expect("request");
        if let Some(der) = peer {
            req.extensions_mut()
                .insert(crate::est::PeerCertificates(std::sync::Arc::new(vec![der])));
        }
        let router = api.est.clone();
        async move {
            let resp = router.oneshot(req).await.expect("response");
            let status = resp.status();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, retry, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, retry, body) = call(Some(der), Method::POST, "/.well-known/est/simplereenroll", csr).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("it can be renewed 3600 s after issuance"), "{body}");
    let retry: i64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((3500..=3600).contains(&retry), "{retry}");

    let (status, _, body) = call(None, Method::GET, "/.well-known/est/cacerts", String::new()).await;
    assert_eq!(status, StatusCode::OK);
    tmp.write(
        "cacerts.p7",
        base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .expect("base64"),
    );
    let printed = tmp.openssl(&["pkcs7", "-inform", "DER", "-in", "cacerts.p7", "-print_certs"]);
    assert_eq!(printed.matches("BEGIN CERTIFICATE").count(), 1, "{printed}");
}

#[tokio::test]
async fn bring_your_own_ca_lifecycle() {
    let api = Api::with_settings(AdminSettings {
        mtls_certificate_limit: 1,
        ..AdminSettings::default()
    })
    .await;
    let tmp = Tmp::new();
    let account = account(&api).await;
    let base = format!("/client/v4/accounts/{account}/mtls_certificates");
    let ca_pem = tmp.ca("byo", "/CN=Test BYO CA/O=Acme");

    // A leaf certificate is not a CA.
    tmp.leaf("leaf", "/CN=just-a-leaf", &[]);
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"ca": true, "certificates": tmp.read("leaf.pem")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error(&body).1;
    assert!(
        message.contains("CN=just-a-leaf") && message.contains("lacks basicConstraints CA:TRUE"),
        "{message}"
    );
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"ca": true, "certificates": ca_pem, "private_key": tmp.read("byo.key")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.contains("private_key is not accepted"), "{body}");

    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"ca": true, "certificates": ca_pem, "name": "byo"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let r = &body["result"];
    let id = s(&r["id"]);
    assert_eq!(
        (&r["ca"], &r["name"], &r["type"]),
        (&json!(true), &json!("byo"), &json!("custom"))
    );
    assert_eq!(r["issuer"], "O=Acme,CN=Test BYO CA");
    assert_eq!(r["signature"], "ECDSAWithSHA256");
    assert_eq!(r["certificates"], ca_pem);
    let serial_hex = tmp.openssl(&["x509", "-in", "byo.pem", "-noout", "-serial"]);
    let serial_hex = serial_hex.trim().trim_start_matches("serial=");
    assert_eq!(
        s(&r["serial_number"]),
        decimal_of_hex(serial_hex),
        "decimal, as Cloudflare shows BYO CA serials"
    );
    assert_eq!(r["crl_updated_on"], Value::Null);

    // The limit of 1 is reached.
    let other = tmp.ca("other", "/CN=Other CA");
    let (status, body) = api
        .send(Method::POST, &base, json!({"ca": true, "certificates": other}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body), (1489, "Hit maximum CA cert allocation.".into()));

    // Associate a hostname; deleting the CA is then refused until the association is gone.
    let zone = api.zone("example.com").await;
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/client/v4/zones/{zone}/hostnames"),
            json!({"hostname": "api.example.com", "origin": "http://127.0.0.1:9000"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let assoc = format!("/client/v4/zones/{zone}/certificate_authorities/hostname_associations");
    let (status, body) = api
        .send(
            Method::PUT,
            &assoc,
            json!({"hostnames": ["api.example.com"], "mtls_certificate_id": id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["result"],
        json!({"hostnames": ["api.example.com"], "mtls_certificate_id": id})
    );
    let (_, body) = api.get(&format!("{assoc}?mtls_certificate_id={id}")).await;
    assert_eq!(body["result"]["hostnames"], json!(["api.example.com"]));
    let (_, body) = api.get(&assoc).await;
    assert_eq!(body["result"]["hostnames"], json!([]), "the managed CA has none");
    let (status, body) = api.get(&format!("{base}/{id}/associations")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["result"],
        json!([{"service": "ssl_client_certificates", "status": "active", "zone_id": zone,
                "hostname": "api.example.com"}])
    );
    let (status, body) = delete(&api, &format!("{base}/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        error(&body)
            .1
            .ends_with("is associated with 1 hostname(s); remove the associations first"),
        "{body}"
    );

    // A CRL made by `openssl ca`, with one revoked certificate.
    tmp.write(
        "ca.cnf",
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n",
    );
    tmp.write("index.txt", "");
    tmp.write("crlnumber", "01\n");
    let client_csr = tmp.csr("client", "ec", "/CN=byo-client");
    assert!(client_csr.contains("CERTIFICATE REQUEST"));
    tmp.openssl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "byo.pem",
        "-CAkey",
        "byo.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "7",
    ]);
    let conf = ["-config", "ca.cnf", "-keyfile", "byo.key", "-cert", "byo.pem"];
    tmp.openssl(&[&["ca"][..], &conf, &["-revoke", "client.pem"]].concat());
    tmp.openssl(&[&["ca"][..], &conf, &["-gencrl", "-out", "byo.crl"]].concat());
    let (status, body) = api
        .send(
            Method::PUT,
            &format!("{base}/{id}/crl"),
            json!({"crl": tmp.read("byo.crl")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["entries"], 1);
    assert_eq!(body["result"]["mtls_certificate_id"], json!(id));
    let (_, got) = api.get(&format!("{base}/{id}")).await;
    assert!(got["result"]["crl_updated_on"].is_string(), "{got}");

    // A CRL signed by another CA is refused.
    tmp.write("index2.txt", "");
    tmp.write("crlnumber2", "01\n");
    tmp.write(
        "other.cnf",
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index2.txt\ncrlnumber = crlnumber2\ndefault_md = sha256\ndefault_crl_days = 30\n",
    );
    tmp.openssl(&[
        "ca",
        "-config",
        "other.cnf",
        "-keyfile",
        "other.key",
        "-cert",
        "other.pem",
        "-gencrl",
        "-out",
        "other.crl",
    ]);
    let (status, body) = api
        .send(
            Method::PUT,
            &format!("{base}/{id}/crl"),
            json!({"crl": tmp.read("other.crl")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&body).1,
        "CRL does not belong to this CA: it was issued by CN=Other CA, not by O=Acme,CN=Test BYO CA"
    );

    // CRL URLs: checked, deduplicated, shown with the fetch state; none stops fetching.
    for (urls, want) in [
        (
            json!(["ftp://pki.example/ca.crl"]),
            "must start with http:// or https://",
        ),
        (json!(["http://user:pw@pki.example/ca.crl"]), "user or password"),
        (json!(["not a url"]), "is not a URL"),
        (json!(vec!["http://pki.example/a.crl"; 9]), "at most 8 CRL URLs"),
    ] {
        let (status, body) = api
            .send(Method::PUT, &format!("{base}/{id}/crl_urls"), json!({"urls": urls}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{urls}");
        assert!(error(&body).1.contains(want), "{urls}: {body}");
    }
    let (status, body) = api
        .send(
            Method::PUT,
            &format!("{base}/{id}/crl_urls"),
            json!({"urls": ["http://pki.example/ca.crl", " http://pki.example/ca.crl"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["crl_urls"], json!(["http://pki.example/ca.crl"]));
    assert!(body["result"]["crl_fetched_on"].is_null(), "{body}");
    let (status, body) = api
        .send(Method::PUT, &format!("{base}/{id}/crl_urls"), json!({"urls": []}))
        .await;
    assert_eq!(
        (status, body["result"]["crl_urls"].clone()),
        (StatusCode::OK, json!([]))
    );

    // Certificates revoked at the edge: by serial number, or by the certificate if this CA issued it.
    let revocations = format!("{base}/{id}/revocations");
    for (request, want) in [
        (json!({}), "give either certificate or serial_number"),
        (
            json!({"serial_number": "0a", "certificate": ca_pem}),
            "give either certificate or serial_number",
        ),
        (json!({"serial_number": "xyz"}), "serial_number must be hex"),
        (json!({"certificate": "not base64!"}), "must be PEM or base64 DER"),
        (
            json!({"certificate": tmp.read("leaf.pem")}),
            "no certificate of this CA issued it",
        ),
        (
            json!({"serial_number": "0a", "note": "x".repeat(501)}),
            "the limit is 500",
        ),
    ] {
        let (status, body) = api.send(Method::POST, &revocations, request.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        assert!(error(&body).1.contains(want), "{request}: {body}");
    }
    // A token that manages client certificates may revoke and take back; a read token may only look.
    let (_, certificates_token) = api
        .store
        .create_token(
            "helpdesk",
            portcullis_store::TokenScope::Certificates,
            &Default::default(),
            &portcullis_store::Actor::system(),
        )
        .await
        .expect("token");
    let request = json!({"serial_number": "00:AB:CD", "note": "lost laptop"}).to_string();
    let (status, _) = api
        .call(Method::POST, &revocations, Some(&api.read.clone()), Some(&request))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api
        .call(Method::POST, &revocations, Some(&certificates_token), Some(&request))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["result"]["serial_number"], &body["result"]["issuer"]),
        (&json!("ABCD"), &Value::Null),
        "{body}"
    );
    let revocation_id = s(&body["result"]["id"]);
    let (status, body) = api.get(&revocations).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"][0]["note"], "lost laptop", "{body}");
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("{revocations}/{revocation_id}"),
            Some(&certificates_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = api.get(&revocations).await;
    assert_eq!(body["result"], json!([]));

    // Failing closed on stale CRLs: off by default, a grace in seconds, bounded.
    let (status, body) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(
        (status, &body["result"]["crl_grace_seconds"]),
        (StatusCode::OK, &Value::Null)
    );
    for bad in [json!(-1), json!(2_592_001)] {
        let (status, body) = api
            .send(
                Method::PUT,
                &format!("{base}/{id}/crl_grace"),
                json!({"grace_seconds": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(error(&body).1.contains("0 to 2592000 seconds"), "{body}");
    }
    let (status, body) = api
        .send(
            Method::PUT,
            &format!("{base}/{id}/crl_grace"),
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(
        (status, &body["result"]["crl_grace_seconds"]),
        (StatusCode::OK, &json!(3600)),
        "{body}"
    );
    let (status, body) = api
        .send(
            Method::PUT,
            &format!("{base}/{id}/crl_grace"),
            json!({"grace_seconds": null}),
        )
        .await;
    assert_eq!(
        (status, &body["result"]["crl_grace_seconds"]),
        (StatusCode::OK, &Value::Null),
        "{body}"
    );

    // OCSP: a check and an optional http:// responder, each refused with the reason when wrong.
    for (settings, want) in [
        (
            json!({"check": "sometimes"}),
            "check must be \"off\", \"soft\" or \"hard\"",
        ),
        (
            json!({"check": "hard", "responder": "https://ocsp.example/"}),
            "must start with http://",
        ),
        (
            json!({"check": "soft", "responder": "http://u:p@ocsp.example/"}),
            "user or password",
        ),
        (
            json!({"check": "off", "responder": "http://ocsp.example/"}),
            "only with check",
        ),
    ] {
        let (status, body) = api
            .send(Method::PUT, &format!("{base}/{id}/ocsp"), settings.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{settings}");
        assert!(error(&body).1.contains(want), "{settings}: {body}");
    }
    let (status, body) = api
        .send(
            Method::PUT,
            &format!("{base}/{id}/ocsp"),
            json!({"check": "hard", "responder": " http://ocsp.example:8080/ocsp "}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["result"]["ocsp_check"], &body["result"]["ocsp_responder"]),
        (&json!("hard"), &json!("http://ocsp.example:8080/ocsp"))
    );
    let (status, body) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(
        (status, &body["result"]["ocsp_check"]),
        (StatusCode::OK, &json!("hard"))
    );
    let (status, body) = api
        .send(Method::PUT, &format!("{base}/{id}/ocsp"), json!({"check": "off"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["result"]["ocsp_check"], &body["result"]["ocsp_responder"]),
        (&json!("off"), &json!(null))
    );

    // Remove the association; then the CA can go.
    let (status, _) = api
        .send(Method::PUT, &assoc, json!({"hostnames": [], "mtls_certificate_id": id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = delete(&api, &format!("{base}/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!({"id": id}));
    let (status, body) = api.get(&format!("{base}/{id}")).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
}

/// Decimal digits of a hex number (for serials up to 160 bits).
fn decimal_of_hex(hex: &str) -> String {
    let mut digits: Vec<u32> = vec![0];
    for c in hex.chars() {
        let mut carry = c.to_digit(16).expect("hex digit");
        for d in &mut digits {
            let v = *d * 16 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push(carry % 10);
            carry /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    digits
        .iter()
        .rev()
        .map(|d| char::from_digit(*d, 10).expect("digit"))
        .collect()
}

/// `openssl req -x509` for a server certificate with DNS SANs (CA:FALSE, as a server certificate must be).
fn server_cert(tmp: &Tmp, name: &str, key_args: &[&str], sans: &str) -> String {
    let pem = format!("{name}.pem");
    let san = format!("subjectAltName={sans}");
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(key_args);
    args.extend([
        "-out",
        &pem,
        "-subj",
        "/CN=www.example.com",
        "-days",
        "30",
        "-addext",
        &san,
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    tmp.openssl(&args);
    tmp.read(&pem)
}

#[tokio::test]
async fn custom_certificates_upload_list_get_delete_and_seal_the_key() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let zone = api.zone("example.com").await;
    let base = format!("/client/v4/zones/{zone}/custom_certificates");

    // PKCS#8 EC key made with the certificate.
    let cert = server_cert(
        &tmp,
        "www",
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "www.key",
        ],
        "DNS:www.example.com,DNS:*.example.com",
    );
    let key = tmp.read("www.key");
    assert!(key.contains("BEGIN PRIVATE KEY"));
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"certificate": cert, "private_key": key, "bundle_method": "ubiquitous", "type": "sni_custom"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let raw = body.to_string();
    assert!(!raw.contains("PRIVATE KEY") && !raw.contains("private_key"), "{raw}");
    let r = &body["result"];
    let id = s(&r["id"]);
    assert_eq!(
        result_shape(r),
        shape(&[
            ("id", "string"),
            ("zone_id", "string"),
            ("hosts", "array"),
            ("issuer", "string"),
            ("signature", "string"),
            ("status", "string"),
            ("bundle_method", "string"),
            ("expires_on", "string"),
            ("uploaded_on", "string"),
            ("modified_on", "string"),
            ("priority", "number"),
        ])
    );
    assert_eq!(r["hosts"], json!(["www.example.com", "*.example.com"]));
    assert_eq!(r["zone_id"], json!(zone));
    assert_eq!(r["issuer"], "CN=www.example.com");
    assert_eq!(r["signature"], "ECDSAWithSHA256");
    assert_eq!(r["status"], "active");
    let end = tmp.openssl(&["x509", "-in", "www.pem", "-noout", "-enddate"]);
    let end = time::PrimitiveDateTime::parse(
        end.trim().trim_start_matches("notAfter=").trim_end_matches(" GMT"),
        time::macros::format_description!("[month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"),
    )
    .expect("openssl date")
    .assume_utc();
    assert_eq!(r["expires_on"], crate::time_fmt::rfc3339(end.unix_timestamp()));

    // The stored key is sealed: not the PKCS#8 bytes, and it opens to them with the master key.
    let uploaded = portcullis_pki::pem::single_from_pem_or_der(key.as_bytes(), "PRIVATE KEY").expect("pkcs8");
    let row = api.store.custom_certificate(&zone, &id).await.expect("row");
    let opened =
        portcullis_pki::server::unseal_key(&api.master_key, &row.certificate, &row.sealed_key).expect("unseal");
    for plain in [&uploaded, &*opened] {
        assert_ne!(&row.sealed_key, plain);
        assert!(!row.sealed_key.windows(plain.len()).any(|w| w == plain.as_slice()));
    }
    assert!(!String::from_utf8_lossy(&row.sealed_key).contains("PRIVATE KEY"));
    // What opens is a PKCS#8 key (openssl reads it) with the uploaded key's public half.
    tmp.write("opened.der", opened.as_slice());
    assert_eq!(
        tmp.openssl(&["pkey", "-inform", "DER", "-in", "opened.der", "-pubout"]),
        tmp.openssl(&["pkey", "-in", "www.key", "-pubout"])
    );
    assert!(portcullis_pki::seal::unseal(&api.master_key, &id, &row.sealed_key).is_err());

    // A key that is not the certificate's.
    tmp.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "other.key",
    ]);
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"certificate": cert, "private_key": tmp.read("other.key")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&body),
        (
            1400,
            "invalid parameter: private_key does not match the certificate: its public key differs from the certificate's"
                .into()
        )
    );

    // SEC1 EC and PKCS#1 RSA keys.
    tmp.openssl(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
        "-out",
        "sec1.key",
    ]);
    assert!(tmp.read("sec1.key").contains("BEGIN EC PRIVATE KEY"));
    let sec1 = server_cert(&tmp, "sec1", &["-key", "sec1.key"], "DNS:api.example.com");
    tmp.openssl(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    assert!(tmp.read("rsa.key").contains("BEGIN RSA PRIVATE KEY"));
    let rsa = server_cert(&tmp, "rsa", &["-key", "rsa.key"], "DNS:rsa.example.com");
    for (cert, key, host, sig) in [
        (&sec1, "sec1.key", "api.example.com", "ECDSAWithSHA256"),
        (&rsa, "rsa.key", "rsa.example.com", "SHA256WithRSA"),
    ] {
        let (status, body) = api
            .send(
                Method::POST,
                &base,
                json!({"certificate": cert, "private_key": tmp.read(key)}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}: {body}");
        assert_eq!(body["result"]["hosts"], json!([host]));
        assert_eq!(body["result"]["signature"], sig);
    }

    // Refusals that name the problem.
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"certificate": cert, "private_key": key, "bundle_method": "best"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.contains("bundle_method \"best\""), "{body}");
    let elsewhere = server_cert(&tmp, "org", &["-key", "sec1.key"], "DNS:www.example.org");
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"certificate": elsewhere, "private_key": tmp.read("sec1.key")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&body).1,
        "the certificate covers no hostname in zone \"example.com\" (it covers www.example.org)"
    );
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"certificate": "garbage", "private_key": key}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&body).1.contains("no -----BEGIN CERTIFICATE----- block"),
        "{body}"
    );
    let ca = tmp.ca("ca", "/CN=www.example.com");
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"certificate": ca, "private_key": tmp.read("ca.key")}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.contains("is a CA certificate"), "{body}");

    // A renewal replaces certificate and key under the same id; the key is sealed for the new certificate.
    let renewed = server_cert(
        &tmp,
        "renewed",
        &["-key", "sec1.key"],
        "DNS:www.example.com,DNS:*.example.com",
    );
    let path = format!("{base}/{id}");
    let (status, body) = api
        .send(
            Method::PATCH,
            &path,
            json!({"certificate": renewed, "private_key": tmp.read("sec1.key")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["id"], json!(id));
    let row = api.store.custom_certificate(&zone, &id).await.expect("row");
    assert!(
        row.certificate.contains(renewed.lines().nth(1).expect("PEM body")),
        "the new chain is stored"
    );
    let opened =
        portcullis_pki::server::unseal_key(&api.master_key, &row.certificate, &row.sealed_key).expect("unseal");
    tmp.write("renewed.der", opened.as_slice());
    assert_eq!(
        tmp.openssl(&["pkey", "-inform", "DER", "-in", "renewed.der", "-pubout"]),
        tmp.openssl(&["pkey", "-in", "sec1.key", "-pubout"])
    );
    for (edit, says) in [
        (
            json!({"certificate": renewed}),
            "certificate and private_key go together",
        ),
        (
            json!({"certificate": renewed, "private_key": key}),
            "does not match the certificate",
        ),
        (
            json!({"certificate": elsewhere, "private_key": tmp.read("sec1.key")}),
            "covers no hostname in zone",
        ),
        (
            json!({"certificate": renewed, "private_key": tmp.read("sec1.key"), "geo": 1}),
            "unknown field `geo`",
        ),
    ] {
        let (status, body) = api.send(Method::PATCH, &path, edit).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains(says), "{says}: {body}");
    }
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("{base}/ffffffffffffffffffffffffffffffff"),
            json!({"certificate": renewed, "private_key": tmp.read("sec1.key")}),
        )
        .await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
    assert_eq!(
        api.store.custom_certificate(&zone, &id).await.expect("row"),
        row,
        "refusals changed nothing"
    );

    // List, get, delete.
    let (status, list) = api.get(&base).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["result_info"]["total_count"], 3);
    let listed = list.to_string();
    assert!(
        !listed.contains("PRIVATE KEY") && !listed.contains("sealed"),
        "{listed}"
    );
    let (_, page) = api.get(&format!("{base}?per_page=2&page=2")).await;
    assert_eq!(page["result_info"]["count"], 1);
    assert_eq!(page["result_info"]["total_pages"], 2);
    let (status, got) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["result"]["hosts"], json!(["www.example.com", "*.example.com"]));
    let (status, body) = delete(&api, &format!("{base}/{id}")).await;
    assert_eq!((status, &body["result"]), (StatusCode::OK, &json!({"id": id})));
    let (status, body) = api.get(&format!("{base}/{id}")).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
    let (status, body) = delete(&api, &format!("{base}/{id}")).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
    let (status, body) = api
        .get("/client/v4/zones/ffffffffffffffffffffffffffffffff/custom_certificates")
        .await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, 7003));
}

/// The JSON objects have exactly Cloudflare's field names and JSON types (cloudflare-mtls.md 1.6, 2.2, 3.3, 4.3).
/// Portcullis extensions, each documented on its type, are listed here by name and nowhere else:
/// - client certificates: `private_key` and `pkcs12`, only in the create response when Portcullis generated the key;
/// - `mtls_certificates`: `crl_updated_on` (Portcullis checks CRLs for uploaded CAs).
#[tokio::test]
async fn json_objects_have_cloudflares_field_names_and_types() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let zone = api.zone("example.com").await;

    // 1.6: client certificate.
    let client_certificate = shape(&[
        ("id", "string"),
        ("certificate", "string"),
        ("certificate_authority", "object"),
        ("common_name", "string"),
        ("country", "string"),
        ("state", "string"),
        ("location", "string"),
        ("organization", "string"),
        ("organizational_unit", "string"),
        ("csr", "string"),
        ("expires_on", "string"),
        ("issued_on", "string"),
        ("fingerprint_sha256", "string"),
        ("serial_number", "string"),
        ("signature", "string"),
        ("ski", "string"),
        ("status", "string"),
        ("validity_days", "number"),
    ]);
    let csr = tmp.csr(
        "c",
        "ec",
        "/C=US/ST=CA/L=Somewhere/O=Organization/OU=Organizational Unit/CN=Cloudflare",
    );
    let path = format!("/client/v4/zones/{zone}/client_certificates");
    let (status, created) = api
        .send(Method::POST, &path, json!({"csr": csr, "validity_days": 3650}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(result_shape(&created["result"]), client_certificate);
    assert_eq!(
        result_shape(&created["result"]["certificate_authority"]),
        shape(&[("id", "string"), ("name", "string")])
    );
    let id = s(&created["result"]["id"]);
    let (_, got) = api.get(&format!("{path}/{id}")).await;
    assert_eq!(result_shape(&got["result"]), client_certificate);
    let (_, list) = api.get(&path).await;
    assert_eq!(result_shape(&list["result"][0]), client_certificate);
    let envelope = shape(&[
        ("success", "bool"),
        ("errors", "array"),
        ("messages", "array"),
        ("result", "array"),
        ("result_info", "object"),
    ]);
    assert_eq!(result_shape(&list), envelope);
    assert_eq!(
        result_shape(&list["result_info"]),
        shape(&[
            ("page", "number"),
            ("per_page", "number"),
            ("count", "number"),
            ("total_count", "number"),
            ("total_pages", "number"),
        ])
    );
    let (status, generated) = api
        .send(
            Method::POST,
            &path,
            json!({"generate_key": {}, "common_name": "gen", "pkcs12_password": "pw"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{generated}");
    let mut with_key = client_certificate.clone();
    with_key.insert("private_key".into(), "string");
    with_key.insert("pkcs12".into(), "string");
    assert_eq!(result_shape(&generated["result"]), with_key);
    let (status, error_body) = api.get(&format!("{path}/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        result_shape(&error_body),
        shape(&[
            ("success", "bool"),
            ("errors", "array"),
            ("messages", "array"),
            ("result", "null"),
        ])
    );
    assert_eq!(
        result_shape(&error_body["errors"][0]),
        shape(&[("code", "number"), ("message", "string")])
    );

    // 3.3: mtls_certificates.
    let account = account(&api).await;
    let ca_pem = tmp.ca("byo", "/CN=Compat CA");
    let (status, byo) = api
        .send(
            Method::POST,
            &format!("/client/v4/accounts/{account}/mtls_certificates"),
            json!({"ca": true, "certificates": ca_pem, "name": "compat"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{byo}");
    let mtls = shape(&[
        ("id", "string"),
        ("ca", "bool"),
        ("certificates", "string"),
        ("expires_on", "string"),
        ("issuer", "string"),
        ("name", "string"),
        ("serial_number", "string"),
        ("signature", "string"),
        ("uploaded_on", "string"),
        ("updated_at", "string"),
        ("type", "string"),
        // Portcullis extensions: null until a CRL is uploaded; no CRL URLs, so nothing fetched.
        ("crl_updated_on", "null"),
        ("crl_urls", "array"),
        ("crl_fetched_on", "null"),
        ("crl_fetch_error", "null"),
        ("ocsp_check", "string"),
        ("ocsp_responder", "null"),
        ("crl_grace_seconds", "null"),
    ]);
    assert_eq!(result_shape(&byo["result"]), mtls);
    let byo_id = s(&byo["result"]["id"]);
    let (_, list) = api
        .get(&format!("/client/v4/accounts/{account}/mtls_certificates"))
        .await;
    assert_eq!(result_shape(&list["result"][0]), mtls);

    // 2.2: hostname associations.
    let (status, _) = api
        .send(
            Method::POST,
            &format!("/client/v4/zones/{zone}/hostnames"),
            json!({"hostname": "api.example.com", "origin": "http://127.0.0.1:9000"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let assoc = format!("/client/v4/zones/{zone}/certificate_authorities/hostname_associations");
    let (status, body) = api
        .send(
            Method::PUT,
            &assoc,
            json!({"hostnames": ["api.example.com"], "mtls_certificate_id": byo_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        result_shape(&body["result"]),
        shape(&[("hostnames", "array"), ("mtls_certificate_id", "string")])
    );
    let (_, body) = api.get(&format!("{assoc}?mtls_certificate_id={byo_id}")).await;
    assert_eq!(
        result_shape(&body["result"]),
        shape(&[("hostnames", "array"), ("mtls_certificate_id", "string")])
    );
    let (_, body) = api.get(&assoc).await;
    assert_eq!(result_shape(&body["result"]), shape(&[("hostnames", "array")]));

    // 4.3: a ruleset with one rule.
    let entry = format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let (status, body) = api
        .send(
            Method::PUT,
            &entry,
            json!({"rules": [{
                "description": "mTLS-enforced authentication",
                "expression": "(not cf.tls_client_auth.cert_verified and http.request.uri.path in {\"/api\"})",
                "action": "block",
                "action_parameters": {"response": {"status_code": 403,
                    "content": "{\"error\":\"client certificate required\"}", "content_type": "application/json"}},
                "enabled": true
            }]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ruleset = shape(&[
        ("id", "string"),
        ("name", "string"),
        ("description", "string"),
        ("kind", "string"),
        ("phase", "string"),
        ("version", "string"),
        ("last_updated", "string"),
        ("rules", "array"),
    ]);
    let rule = shape(&[
        ("id", "string"),
        ("ref", "string"),
        ("version", "string"),
        ("action", "string"),
        ("expression", "string"),
        ("description", "string"),
        ("enabled", "bool"),
        ("action_parameters", "object"),
        ("last_updated", "string"),
    ]);
    for body in [body.clone(), api.get(&entry).await.1] {
        assert_eq!(result_shape(&body["result"]), ruleset);
        assert_eq!(body["result"]["rules"].as_array().expect("rules").len(), 1);
        assert_eq!(result_shape(&body["result"]["rules"][0]), rule);
        assert_eq!(
            result_shape(&body["result"]["rules"][0]["action_parameters"]["response"]),
            shape(&[
                ("status_code", "number"),
                ("content", "string"),
                ("content_type", "string")
            ])
        );
    }
}

/// Every route of `api_routes()` is in `/client/v4/openapi.json`, with its method, and nothing else is: the list
/// below is written out by hand, the document must equal it, and every entry must reach a handler in the router.
#[tokio::test]
async fn openapi_lists_every_route_of_the_router() {
    const ROUTES: &[(&str, &str)] = &[
        ("get", "/accounts"),
        ("get", "/accounts/{account_id}/audit_logs"),
        ("get", "/zones"),
        ("post", "/zones"),
        ("get", "/zones/{zone_id}"),
        ("delete", "/zones/{zone_id}"),
        ("get", "/zones/{zone_id}/rulesets"),
        ("post", "/zones/{zone_id}/rulesets"),
        ("get", "/zones/{zone_id}/rulesets/{ruleset_id}"),
        ("put", "/zones/{zone_id}/rulesets/{ruleset_id}"),
        ("delete", "/zones/{zone_id}/rulesets/{ruleset_id}"),
        ("get", "/zones/{zone_id}/access/certificates/settings"),
        ("put", "/zones/{zone_id}/access/certificates/settings"),
        ("get", "/zones/{zone_id}/url_normalization"),
        ("put", "/zones/{zone_id}/url_normalization"),
        ("delete", "/zones/{zone_id}/url_normalization"),
        ("get", "/zones/{zone_id}/hostnames"),
        ("post", "/zones/{zone_id}/hostnames"),
        ("get", "/zones/{zone_id}/hostnames/{hostname_id}"),
        ("patch", "/zones/{zone_id}/hostnames/{hostname_id}"),
        ("delete", "/zones/{zone_id}/hostnames/{hostname_id}"),
        ("get", "/zones/{zone_id}/certificate_authorities/hostname_associations"),
        ("put", "/zones/{zone_id}/certificate_authorities/hostname_associations"),
        ("get", "/zones/{zone_id}/portcullis/mtls_check"),
        ("get", "/zones/{zone_id}/portcullis/client_certificate_policy"),
        ("put", "/zones/{zone_id}/portcullis/client_certificate_policy"),
        ("get", "/zones/{zone_id}/rulesets/phases/{phase}/entrypoint"),
        ("put", "/zones/{zone_id}/rulesets/phases/{phase}/entrypoint"),
        ("post", "/zones/{zone_id}/rulesets/{ruleset_id}/rules"),
        ("patch", "/zones/{zone_id}/rulesets/{ruleset_id}/rules/{rule_id}"),
        ("delete", "/zones/{zone_id}/rulesets/{ruleset_id}/rules/{rule_id}"),
        ("post", "/rules/validate"),
        ("get", "/zones/{zone_id}/client_certificates"),
        ("post", "/zones/{zone_id}/client_certificates"),
        ("get", "/zones/{zone_id}/client_certificates/{client_certificate_id}"),
        ("patch", "/zones/{zone_id}/client_certificates/{client_certificate_id}"),
        ("delete", "/zones/{zone_id}/client_certificates/{client_certificate_id}"),
        ("get", "/zones/{zone_id}/custom_certificates"),
        ("post", "/zones/{zone_id}/custom_certificates"),
        ("get", "/zones/{zone_id}/custom_certificates/{custom_certificate_id}"),
        ("patch", "/zones/{zone_id}/custom_certificates/{custom_certificate_id}"),
        ("delete", "/zones/{zone_id}/custom_certificates/{custom_certificate_id}"),
        ("post", "/zones/{zone_id}/ssl/certificate_packs/order"),
        ("get", "/zones/{zone_id}/managed_headers"),
        ("patch", "/zones/{zone_id}/managed_headers"),
        ("get", "/zones/{zone_id}/ssl/acme_dns"),
        ("put", "/zones/{zone_id}/ssl/acme_dns"),
        ("delete", "/zones/{zone_id}/ssl/acme_dns"),
        ("get", "/zones/{zone_id}/ssl/certificate_packs"),
        ("get", "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}"),
        ("patch", "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}"),
        ("delete", "/zones/{zone_id}/ssl/certificate_packs/{certificate_pack_id}"),
        ("get", "/zones/{zone_id}/security/events"),
        ("get", "/accounts/{account_id}/managed_ca"),
        ("post", "/accounts/{account_id}/managed_ca/rotate"),
        ("delete", "/accounts/{account_id}/managed_ca/{ca_id}"),
        ("get", "/accounts/{account_id}/managed_ca/requests"),
        ("post", "/accounts/{account_id}/managed_ca/requests"),
        (
            "post",
            "/accounts/{account_id}/managed_ca/requests/{request_id}/install",
        ),
        ("delete", "/accounts/{account_id}/managed_ca/requests/{request_id}"),
        ("get", "/accounts/{account_id}/mtls_certificates"),
        ("post", "/accounts/{account_id}/mtls_certificates"),
        ("get", "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}"),
        (
            "delete",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}",
        ),
        (
            "get",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/associations",
        ),
        (
            "put",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/crl",
        ),
        (
            "put",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/crl_urls",
        ),
        (
            "put",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/ocsp",
        ),
        (
            "put",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/crl_grace",
        ),
        (
            "get",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/revocations",
        ),
        (
            "post",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/revocations",
        ),
        (
            "delete",
            "/accounts/{account_id}/mtls_certificates/{mtls_certificate_id}/revocations/{revocation_id}",
        ),
        ("get", "/accounts/{account_id}/rules/lists"),
        ("post", "/accounts/{account_id}/rules/lists"),
        ("get", "/accounts/{account_id}/rules/lists/{list_id}"),
        ("put", "/accounts/{account_id}/rules/lists/{list_id}"),
        ("delete", "/accounts/{account_id}/rules/lists/{list_id}"),
        ("get", "/accounts/{account_id}/rules/lists/{list_id}/items"),
        ("post", "/accounts/{account_id}/rules/lists/{list_id}/items"),
        ("put", "/accounts/{account_id}/rules/lists/{list_id}/items"),
        ("delete", "/accounts/{account_id}/rules/lists/{list_id}/items"),
        ("get", "/accounts/{account_id}/rules/lists/{list_id}/items/{item_id}"),
        (
            "get",
            "/accounts/{account_id}/rules/lists/bulk_operations/{operation_id}",
        ),
        ("get", "/accounts/{account_id}/portcullis/traffic"),
        ("get", "/user/tokens"),
        ("post", "/user/tokens"),
        ("delete", "/user/tokens/{token_id}"),
        ("get", "/user/tokens/verify"),
    ];
    let api = Api::new().await;
    let (status, doc) = api.call(Method::GET, "/client/v4/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.push((method.clone(), path.clone()));
                assert!(
                    item[method]["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path} documents its responses"
                );
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    expected.sort();
    assert_eq!(documented, expected);

    // Each documented route reaches a handler (no 7000 "No route" or 7001 "Method not allowed"). Placeholder ids
    // point at nothing, so no call changes anything.
    let fake = "ffffffffffffffffffffffffffffffff";
    for (method, path) in ROUTES {
        let uri = format!(
            "/client/v4{}",
            path.replace("{phase}", "http_request_firewall_custom")
                .split('/')
                .map(|seg| if seg.starts_with('{') { fake } else { seg })
                .collect::<Vec<_>>()
                .join("/")
        );
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let body = (method != Method::GET && method != Method::DELETE).then_some("{}");
        let (status, resp) = api.call(method.clone(), &uri, Some(&api.write.clone()), body).await;
        let code = resp["errors"][0]["code"].as_u64();
        assert!(
            !matches!(code, Some(7000 | 7001)) && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri} did not reach a handler: {status} {resp}"
        );
    }
}

/// Client certificates for origins that require one: uploaded with their key (`"ca": false`), the key never shown
/// again, usable only as a hostname's `origin_client_certificate` and never as a CA.
#[tokio::test]
async fn origin_client_certificates_are_uploaded_with_their_key_and_used_by_hostnames() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let account = account(&api).await;
    let base = format!("/client/v4/accounts/{account}/mtls_certificates");
    let leaf = |name: &str| tmp.leaf(name, &format!("/CN={name}"), &["extendedKeyUsage=clientAuth"]);
    let (cert, key) = leaf("edge-to-origin");
    let (_, other_key) = leaf("someone-else");

    let (status, body) = api
        .send(Method::POST, &base, json!({"ca": false, "certificates": cert}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.contains("needs its private_key"), "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"ca": false, "certificates": cert, "private_key": other_key}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a key that is not the certificate's: {body}"
    );
    let (status, body) = api
        .send(
            Method::POST,
            &base,
            json!({"ca": false, "certificates": cert, "private_key": key, "name": "to origin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = s(&body["result"]["id"]);
    assert_eq!(body["result"]["ca"], json!(false));
    assert!(body["result"].get("private_key").is_none() && !body.to_string().contains("PRIVATE KEY"));
    let (_, listed) = api.get(&base).await;
    assert!(
        !listed.to_string().contains("PRIVATE KEY"),
        "the key is never shown again"
    );

    // Not a CA: no associations, no CRL.
    let zone = api.zone("example.com").await;
    let hosts = format!("/client/v4/zones/{zone}/hostnames");
    let create = |origin: &str, cert_id: &str| json!({"hostname": "api.example.com", "origin": origin, "origin_client_certificate": cert_id});
    let (status, body) = api
        .send(
            Method::POST,
            &hosts,
            json!({"hostname": "mtls.example.com", "origin": "https://10.0.0.1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let assoc = format!("/client/v4/zones/{zone}/certificate_authorities/hostname_associations");
    let (status, body) = api
        .send(
            Method::PUT,
            &assoc,
            json!({"hostnames": ["mtls.example.com"], "mtls_certificate_id": id}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).1.contains("is a client certificate"), "{body}");
    let (status, _) = api
        .send(
            Method::PUT,
            &format!("{base}/{id}/crl"),
            json!({"crl": "-----BEGIN X509 CRL-----"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A hostname presents it to its https origin; http origins and unknown ids are refused.
    let (status, body) = api.send(Method::POST, &hosts, create("http://10.0.0.2", &id)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).1.contains("needs an https:// origin"), "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            &hosts,
            create("https://10.0.0.2", "ffffffffffffffffffffffffffffffff"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = api.send(Method::POST, &hosts, create("https://10.0.0.2", &id)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["result"]["origin_client_certificate"], json!(id));
    let host_id = s(&body["result"]["id"]);
    let (status, body) = delete(&api, &format!("{base}/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        error(&body).1.contains("origin client certificate of api.example.com"),
        "{body}"
    );
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("{hosts}/{host_id}"),
            json!({"origin": "http://10.0.0.3"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "still in use over http: {body}");
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("{hosts}/{host_id}"),
            json!({"origin_client_certificate": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["result"].get("origin_client_certificate").is_none());
    let (status, _) = delete(&api, &format!("{base}/{id}")).await;
    assert_eq!(status, StatusCode::OK);
}

/// Uploaded client certificates are the account's: a token limited to a zone cannot have its hostnames present one
/// (and prove its key) to an origin it names, on create or update; it can keep or clear the one a hostname has.
#[tokio::test]
async fn zone_tokens_cannot_choose_an_account_client_certificate_for_their_origins() {
    let api = Api::new().await;
    let tmp = Tmp::new();
    let account = account(&api).await;
    let (cert, key) = tmp.leaf("b-to-origin", "/CN=b-to-origin", &["extendedKeyUsage=clientAuth"]);
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/client/v4/accounts/{account}/mtls_certificates"),
            json!({"ca": false, "certificates": cert, "private_key": key}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let cert_id = s(&body["result"]["id"]);
    let a = api.zone("a.example").await;
    let hosts = format!("/client/v4/zones/{a}/hostnames");
    let (status, body) = api
        .send(
            Method::POST,
            &hosts,
            json!({"hostname": "kept.a.example", "origin": "https://10.0.0.1", "origin_client_certificate": cert_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let kept = s(&body["result"]["id"]);
    let (status, made) = api
        .send(
            Method::POST,
            "/client/v4/user/tokens",
            json!({"name": "team-a", "scope": "write", "zones": [a]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let team = s(&made["result"]["value"]);
    let as_team = |method: Method, path: String, body: Value| {
        let team = team.clone();
        let api = &api;
        async move { api.call(method, &path, Some(&team), Some(&body.to_string())).await }
    };

    let (status, body) = as_team(
        Method::POST,
        hosts.clone(),
        json!({"hostname": "new.a.example", "origin": "https://attacker.example", "origin_client_certificate": cert_id}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).1.contains("account-wide token"), "{body}");
    let (status, body) = as_team(
        Method::POST,
        hosts.clone(),
        json!({"hostname": "new.a.example", "origin": "https://10.0.0.2"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let new = s(&body["result"]["id"]);
    let (status, body) = as_team(
        Method::PATCH,
        format!("{hosts}/{new}"),
        json!({"origin_client_certificate": cert_id}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, body) = api.get(&format!("{hosts}/{new}")).await;
    assert!(body["result"].get("origin_client_certificate").is_none(), "{body}");
    // The hostname's own certificate: kept while other settings change, and cleared.
    let (status, body) = as_team(
        Method::PATCH,
        format!("{hosts}/{kept}"),
        json!({"origin_client_certificate": cert_id, "origin_http2": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = as_team(
        Method::PATCH,
        format!("{hosts}/{kept}"),
        json!({"origin_client_certificate": ""}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The account-wide token may set it.
    let (status, body) = api
        .patch(&format!("{hosts}/{new}"), json!({"origin_client_certificate": cert_id}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A `certificates` token, for a provisioning service: it reads, and issues, revokes and reactivates client
/// certificates, and nothing else.
#[tokio::test]
async fn certificates_tokens_manage_client_certificates_only() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let (status, body) = api
        .send(
            Method::POST,
            "/client/v4/user/tokens",
            json!({"name": "enroll", "scope": "certificates"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["result"]["scope"], "certificates");
    let token = s(&body["result"]["value"]);
    let call = |method: Method, path: String, body: Option<Value>| {
        let token = token.clone();
        let api = &api;
        async move {
            let body = body.map(|b| b.to_string());
            api.call(method, &path, Some(&token), body.as_deref()).await
        }
    };
    let certs = format!("/client/v4/zones/{zone}/client_certificates");
    let (status, body) = call(
        Method::POST,
        certs.clone(),
        Some(json!({"generate_key": {}, "common_name": "device-9", "validity_days": 7})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = s(&body["result"]["id"]);
    let (status, _) = call(Method::DELETE, format!("{certs}/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "revoke");
    let (status, body) = call(Method::PATCH, format!("{certs}/{id}"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "reactivate: {body}");
    let (status, _) = call(Method::GET, format!("{certs}/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(Method::GET, "/client/v4/zones".into(), None).await;
    assert_eq!(status, StatusCode::OK, "it reads everything");

    for (method, path, body) in [
        (
            Method::POST,
            "/client/v4/zones".to_owned(),
            Some(json!({"name": "evil.example"})),
        ),
        (
            Method::PUT,
            format!("/client/v4/zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint"),
            Some(json!({"rules": []})),
        ),
        (
            Method::POST,
            "/client/v4/user/tokens".to_owned(),
            Some(json!({"name": "x", "scope": "write"})),
        ),
        (
            Method::PUT,
            format!("/client/v4/zones/{zone}/certificate_authorities/hostname_associations"),
            Some(json!({"hostnames": []})),
        ),
        (Method::DELETE, format!("/client/v4/zones/{zone}"), None),
        (
            Method::POST,
            format!("/client/v4/zones/{zone}/hostnames"),
            Some(json!({"hostname": "a.example.com", "origin": "http://127.0.0.1:1"})),
        ),
    ] {
        let (status, body) = call(method.clone(), path.clone(), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert!(
            error(&body).1.contains("may only read and manage client certificates"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn certificate_packs_are_ordered_checked_listed_and_deleted() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let base = format!("/client/v4/zones/{zone}/ssl/certificate_packs");
    let order = format!("{base}/order");

    let refused = [
        (json!({"hosts": ["*.example.com"]}), "dns-01"),
        (json!({"hosts": ["api.example.org"]}), "not in zone"),
        (json!({"hosts": []}), "1 to 50"),
        (json!({"hosts": ["a.example.com", "A.example.com"]}), "twice"),
        (
            json!({"hosts": ["a.example.com"], "validation_method": "txt"}),
            "DNS update settings",
        ),
        (
            json!({"hosts": ["a.example.com"], "validation_method": "email"}),
            "not available",
        ),
        (
            json!({"hosts": ["*.example.com"], "validation_method": "http"}),
            "over DNS (dns-01) only",
        ),
        (json!({"hosts": ["a.example.com"], "type": "universal"}), "advanced"),
        (
            json!({"hosts": ["a.example.com"], "validity_days": 90}),
            "ACME CA decides",
        ),
        (
            json!({"hosts": ["a.example.com"], "certificate_authority": "google"}),
            "--acme-directory",
        ),
        (
            json!({"hosts": ["a.example.com"], "cloudflare_branding": true}),
            "branding",
        ),
        (json!({"hosts": ["a.example.com"], "validity": 90}), "unknown field"),
    ];
    for (body, why) in refused {
        let (status, resp) = api.send(Method::POST, &order, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert!(resp.to_string().contains(why), "{body}: {resp}");
    }

    let (status, body) = api
        .send(
            Method::POST,
            &order,
            json!({"type": "advanced", "hosts": ["API.example.com", "example.com"], "validation_method": "tls-alpn-01", "cloudflare_branding": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pack = &body["result"];
    assert_eq!(pack["hosts"], json!(["api.example.com", "example.com"]));
    assert_eq!(pack["status"], "initializing");
    assert_eq!(pack["type"], "advanced");
    assert_eq!(pack["primary_certificate"], Value::Null);
    let id = s(&pack["id"]);
    let (status, http) = api
        .send(
            Method::POST,
            &order,
            json!({"hosts": ["h.example.com"], "validation_method": "http"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{http}");
    assert_eq!(http["result"]["validation_method"], "http");

    // A name is in one pack at a time.
    let (status, resp) = api.send(Method::POST, &order, json!({"hosts": ["example.com"]})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");
    assert!(resp.to_string().contains(&id), "{resp}");

    let (status, list) = api.get(&base).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["result"].as_array().map(Vec::len), Some(2));
    let (status, got) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["result"]["id"], pack["id"]);

    // What the ACME manager records shows through: the last failure, and when the next attempt comes.
    let later = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    api.store
        .certificate_pack_failed(&id, &["Connection refused".to_owned()], later)
        .await
        .expect("failed");
    let (_, got) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(got["result"]["status"], "pending_validation");
    assert_eq!(
        got["result"]["validation_errors"],
        json!([{"message": "Connection refused"}])
    );
    assert!(got["result"]["next_attempt_on"].is_string(), "{got}");
    // Restarting validation: no more waiting.
    let (status, restarted) = api.send(Method::PATCH, &format!("{base}/{id}"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{restarted}");
    assert_eq!(restarted["result"]["next_attempt_on"], Value::Null);

    let (status, _) = api.delete(&format!("{base}/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get(&format!("{base}/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dns_settings_are_checked_kept_sealed_and_make_wildcard_packs_possible() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let dns = format!("/client/v4/zones/{zone}/ssl/acme_dns");
    let order = format!("/client/v4/zones/{zone}/ssl/certificate_packs/order");
    const SECRET: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";

    let (status, none) = api.get(&dns).await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none["result"], Value::Null);

    let good = json!({"server": "192.0.2.53", "key_name": "portcullis", "secret": SECRET});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let refused = [
        (with("server", json!("ns.example.com:99999")), "port"),
        (with("key_name", json!("two words")), "key_name"),
        (with("algorithm", json!("hmac-md5")), "hmac-sha256"),
        (with("secret", json!("c2hvcnQ=")), "too short"),
        (with("secret", json!("not base64 at all!")), "not base64"),
        (with("dns_zone", json!("example.org")), "parent"),
        (with("propagation_seconds", json!(600)), "0 to 120"),
        (with("ttl", json!(60)), "unknown field"),
    ];
    for (body, why) in refused {
        let (status, resp) = api.send(Method::PUT, &dns, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert!(resp.to_string().contains(why), "{body}: {resp}");
    }

    let (status, set) = api.send(Method::PUT, &dns, with("dns_zone", json!("com."))).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["result"]["server"], "192.0.2.53:53");
    assert_eq!(set["result"]["dns_zone"], "com");
    assert_eq!(set["result"]["algorithm"], "hmac-sha256");
    assert_eq!(set["result"]["propagation_seconds"], 10);
    let (_, got) = api.get(&dns).await;
    assert_eq!(got["result"]["key_name"], "portcullis");
    assert!(
        !got.to_string().contains(SECRET) && got["result"].get("secret").is_none(),
        "{got}"
    );
    // Sealed with the master key under the zone's label.
    let stored = api.store.acme_dns(&zone).await.expect("read").expect("stored");
    let secret = portcullis_pki::seal::unseal(&api.master_key, &crate::tsig_seal_label(&zone), &stored.sealed_secret)
        .expect("unseals");
    assert_eq!(secret.len(), 32);

    // With the settings, packs are validated over DNS by default, and wildcards may be ordered.
    let (status, pack) = api
        .send(Method::POST, &order, json!({"hosts": ["*.example.com", "example.com"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{pack}");
    assert_eq!(pack["result"]["validation_method"], "txt");
    let (status, resp) = api
        .send(
            Method::POST,
            &order,
            json!({"hosts": ["*.api.example.com"], "validation_method": "tls-alpn-01"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    let (status, alpn) = api
        .send(
            Method::POST,
            &order,
            json!({"hosts": ["www.example.com"], "validation_method": "tls-alpn-01"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{alpn}");
    assert_eq!(alpn["result"]["validation_method"], "tls-alpn-01");

    // The settings stay while a pack needs them.
    let (status, resp) = api.delete(&dns).await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");
    let id = s(&pack["result"]["id"]);
    let (status, _) = api
        .delete(&format!("/client/v4/zones/{zone}/ssl/certificate_packs/{id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp) = api.delete(&dns).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (_, none) = api.get(&dns).await;
    assert_eq!(none["result"], Value::Null);
    let (status, _) = api.delete(&dns).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn managed_headers_are_listed_and_switched_in_cloudflare_s_shape() {
    let api = Api::new().await;
    let zone = api.zone("example.com").await;
    let path = format!("/client/v4/zones/{zone}/managed_headers");
    let (status, body) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["result"],
        json!({"managed_request_headers": [{"id": "add_client_certificate_headers", "enabled": false},
                                           {"id": "add_true_client_ip_headers", "enabled": false}],
               "managed_response_headers": [{"id": "add_security_headers", "enabled": false},
                                            {"id": "remove_x-powered-by_header", "enabled": false}]})
    );
    let on = json!({"managed_request_headers": [{"id": "add_client_certificate_headers", "enabled": true}]});
    let (status, body) = api.patch(&path, on).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["managed_request_headers"][0]["enabled"], true);
    let state = api.store.load_edge_state().await.expect("state");
    assert_eq!(
        state.zones[0].managed_request_headers,
        ["add_client_certificate_headers"]
    );
    // Those left out stay as they are.
    let response = json!({"managed_response_headers": [{"id": "remove_x-powered-by_header", "enabled": true}]});
    let (status, body) = api.patch(&path, response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["managed_request_headers"][0]["enabled"], true);
    assert_eq!(body["result"]["managed_response_headers"][1]["enabled"], true);
    let state = api.store.load_edge_state().await.expect("state");
    assert_eq!(state.zones[0].managed_response_headers, ["remove_x-powered-by_header"]);
    for (patch, why) in [
        (
            json!({"managed_request_headers": [{"id": "add_visitor_location_headers", "enabled": true}]}),
            "not offered",
        ),
        (
            json!({"managed_response_headers": [{"id": "add_client_certificate_headers", "enabled": true}]}),
            "not offered",
        ),
        (
            json!({"managed_request_headers": [{"id": "add_client_certificate_headers"}]}),
            "enabled",
        ),
    ] {
        let (status, body) = api.patch(&path, patch.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{patch}: {body}");
        assert!(body.to_string().contains(why), "{patch}: {body}");
    }
    let off = json!({"managed_request_headers": [{"id": "add_client_certificate_headers", "enabled": false}]});
    let (_, body) = api.patch(&path, off).await;
    assert_eq!(body["result"]["managed_request_headers"][0]["enabled"], false);
}
