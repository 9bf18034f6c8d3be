//! A managed CA signed by another CA: the request, the checks at install, and issuance under it.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::{Duration, OffsetDateTime, macros::datetime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::*;

fn now() -> OffsetDateTime {
    datetime!(2026-03-01 12:00:00 UTC)
}

/// A CA of the operator's: self-signed when `parent` is `None`.
struct OwnCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn own_ca(cn: &str, path_len: Option<u8>, parent: Option<&OwnCa>) -> OwnCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now() - Duration::days(1);
    params.not_after = now() + Duration::days(3650);
    let cert = match parent {
        None => params.self_signed(&key).unwrap(),
        Some(p) => params.signed_by(&key, &Issuer::from_params(&p.params, &p.key)).unwrap(),
    };
    OwnCa {
        pem: cert.pem(),
        params,
        key,
    }
}

/// `issuer` signs `request`'s CSR as it asks (CA, key usages), valid for a year from yesterday; `edit` may change
/// what is signed.
fn sign(request: &CaRequest, issuer: &OwnCa, edit: impl FnOnce(&mut CertificateParams)) -> String {
    let csr = pem::single_from_pem_or_der(request.csr_pem().as_bytes(), "CERTIFICATE REQUEST").unwrap();
    let mut csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr)).unwrap();
    csr.params.not_before = now() - Duration::days(1);
    csr.params.not_after = now() + Duration::days(365);
    edit(&mut csr.params);
    csr.signed_by(&Issuer::from_params(&issuer.params, &issuer.key))
        .unwrap()
        .pem()
}

fn request() -> CaRequest {
    CaRequest::create(&CaRequestParams {
        common_name: Some("Acme Devices CA".into()),
        organization: Some("Acme".into()),
        key_type: KeyType::P256,
    })
    .unwrap()
}

fn der(c: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from(c.to_vec())
}

#[test]
fn the_csr_asks_for_a_ca_that_signs_certificates_and_crls() {
    let req = request();
    let der = pem::single_from_pem_or_der(req.csr_pem().as_bytes(), "CERTIFICATE REQUEST").unwrap();
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der)).unwrap();
    assert_eq!(csr.params.is_ca, IsCa::Ca(BasicConstraints::Constrained(0)));
    assert!(csr.params.key_usages.contains(&KeyUsagePurpose::KeyCertSign));
    assert!(csr.params.key_usages.contains(&KeyUsagePurpose::CrlSign));
    assert_eq!(req.name(), "Acme Devices CA");

    let default = CaRequest::create(&CaRequestParams::default()).unwrap();
    assert_eq!(default.name(), format!("Portcullis Managed CA {}", &default.id()[..8]));
    for bad in ["", " ", &"x".repeat(65), "a\nb"] {
        let err = CaRequest::create(&CaRequestParams {
            common_name: Some(bad.to_owned()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("common_name must be 1 to 64 bytes"), "{err}");
    }
}

#[test]
fn an_installed_ca_issues_certificates_that_chain_to_the_root() {
    let root = own_ca("Acme Root", None, None);
    let middle = own_ca("Acme Issuing", Some(1), Some(&root));
    let master = MasterKey::generate();
    let req = request();
    // Stored and read back, as between the request and the install.
    let sealed = req.sealed_key(&master);
    let req = CaRequest::from_sealed(req.id(), req.name(), req.key_type(), &req.csr_pem(), &sealed, &master).unwrap();
    let id = req.id().to_owned();
    let cert = sign(&req, &middle, |_| {});
    let chain = format!("{}{}", middle.pem, root.pem);
    let installed = req.install(&cert, &chain, now()).unwrap();
    let ca = installed.ca;
    assert_eq!(ca.id(), id);
    assert_eq!(ca.name(), "Acme Devices CA");
    assert_eq!(
        installed.chain_pem,
        format!(
            "{}{}",
            pem::encode(
                "CERTIFICATE",
                &pem::certificates_from_pem_or_der(middle.pem.as_bytes()).unwrap()[0]
            ),
            pem::encode(
                "CERTIFICATE",
                &pem::certificates_from_pem_or_der(root.pem.as_bytes()).unwrap()[0]
            )
        )
    );
    // The key kept is the request's: the installed CA round-trips through the seal under the same id.
    let again = ManagedCa::from_sealed(ca.id(), ca.key_type(), ca.certificate_der(), &sealed, &master).unwrap();
    assert_eq!(again.certificate_der(), ca.certificate_der());

    let issued = ca
        .issue_with_generated_key(
            &GeneratedKeyRequest {
                key_type: KeyType::P256,
                subject: SubjectFields {
                    common_name: "device-7".into(),
                    ..Default::default()
                },
                sans: SubjectAltNames::default(),
            },
            &IssueOptions {
                validity_days: 30,
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&issued.der).unwrap();
    let (_, own) = X509Certificate::from_der(ca.certificate_der()).unwrap();
    assert_eq!(leaf.issuer().as_raw(), own.subject().as_raw());

    // The edge trusts the managed CA itself; a verifier that trusts only the root needs the chain from the client.
    let mut b = VerifierBuilder::new();
    b.add_anchor(ca.certificate_der()).unwrap();
    assert!(b.build().verify(&[der(&issued.der)], now()).is_trusted());
    let mut b = VerifierBuilder::new();
    b.add_anchors_pem_or_der(root.pem.as_bytes()).unwrap();
    let verifier = b.build();
    assert!(!verifier.verify(&[der(&issued.der)], now()).is_trusted());
    let middle_der = pem::certificates_from_pem_or_der(middle.pem.as_bytes())
        .unwrap()
        .remove(0);
    let full = [der(&issued.der), der(ca.certificate_der()), der(&middle_der)];
    assert!(verifier.verify(&full, now()).is_trusted());

    // What a renewing client sends after its certificate, from EST's cacerts: the managed CA and the intermediate,
    // not the root; nothing above a self-signed managed CA.
    let root_der = pem::certificates_from_pem_or_der(root.pem.as_bytes())
        .unwrap()
        .remove(0);
    let cacerts = vec![root_der.clone(), middle_der.clone(), ca.certificate_der().to_vec()];
    assert_eq!(
        est::chain_above(&issued.der, &cacerts).unwrap(),
        [ca.certificate_der().to_vec(), middle_der.clone()]
    );
    assert_eq!(
        est::chain_above(&issued.der, &[root_der]).unwrap(),
        Vec::<Vec<u8>>::new()
    );

    // The chain may come after the certificate in the one field.
    let req = request();
    let cert = sign(&req, &root, |_| {});
    let installed = req.install(&format!("{cert}{}", root.pem), "", now()).unwrap();
    assert_eq!(installed.chain_pem.matches("BEGIN CERTIFICATE").count(), 1);
}

fn install_err(req: CaRequest, cert: &str, chain: &str) -> String {
    req.install(cert, chain, now()).unwrap_err().to_string()
}

#[test]
fn what_cannot_be_installed_is_named() {
    let root = own_ca("Acme Root", None, None);
    let middle = own_ca("Acme Issuing", Some(1), Some(&root));
    let other_root = own_ca("Other Root", None, None);

    // A certificate for another request's key.
    let first = request();
    let second = request();
    let cert = sign(&second, &root, |_| {});
    let err = install_err(first, &cert, &root.pem);
    assert!(err.contains("is for another key"), "{err}");

    let req = request();
    let cert = sign(&req, &root, |_| {});
    assert!(install_err(req, &cert, "").contains("no chain"));

    let req = request();
    let cert = sign(&req, &root, |_| {});
    let err = install_err(req, &cert, &other_root.pem);
    assert!(
        err.contains("the certificate is issued by CN=Acme Root, not by chain certificate 1 (CN=Other Root)"),
        "{err}"
    );
    // Same name, another key.
    let twin = own_ca("Acme Root", None, None);
    let req = request();
    let cert = sign(&req, &root, |_| {});
    let err = install_err(req, &cert, &twin.pem);
    assert!(
        err.contains("the certificate's signature does not verify with the key of chain certificate 1 (CN=Acme Root)"),
        "{err}"
    );

    // Root first, then the intermediate: out of order.
    let req = request();
    let cert = sign(&req, &middle, |_| {});
    let err = install_err(req, &cert, &format!("{}{}", root.pem, middle.pem));
    assert!(
        err.contains("is issued by CN=Acme Issuing, not by chain certificate 1 (CN=Acme Root)"),
        "{err}"
    );

    let req = request();
    let cert = sign(&req, &middle, |_| {});
    let err = install_err(req, &cert, &middle.pem);
    assert!(
        err.contains("the chain ends at CN=Acme Issuing, which is not a self-signed root"),
        "{err}"
    );

    // An intermediate that may have no CA below it.
    let strict = own_ca("Acme Strict", Some(0), Some(&root));
    let req = request();
    let cert = sign(&req, &strict, |_| {});
    let err = install_err(req, &cert, &format!("{}{}", strict.pem, root.pem));
    assert!(
        err.contains("chain certificate 1 (CN=Acme Strict) allows 0 CA(s) below it"),
        "{err}"
    );

    let req = request();
    let cert = sign(&req, &root, |p| p.is_ca = IsCa::ExplicitNoCa);
    let err = install_err(req, &cert, &root.pem);
    assert!(err.contains("lacks basicConstraints CA:TRUE"), "{err}");

    let req = request();
    let cert = sign(&req, &root, |p| p.key_usages = vec![KeyUsagePurpose::KeyCertSign]);
    let err = install_err(req, &cert, &root.pem);
    assert!(err.contains("lacks cRLSign"), "{err}");

    let req = request();
    let cert = sign(&req, &root, |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    let err = install_err(req, &cert, &root.pem);
    assert!(err.contains("does not include clientAuth"), "{err}");

    let req = request();
    let cert = sign(&req, &root, |p| p.not_after = now() - Duration::hours(1));
    let err = install_err(req, &cert, &root.pem);
    assert!(err.contains("expired on"), "{err}");

    let req = request();
    let key = KeyPair::generate().unwrap();
    let err = install_err(req, &key.serialize_pem(), &root.pem);
    assert!(err.contains("certificate: block 1 is a PRIVATE KEY"), "{err}");

    // A stored request whose sealed key is another request's is refused, not mixed up.
    let master = MasterKey::generate();
    let a = request();
    let b = request();
    let err = CaRequest::from_sealed(
        a.id(),
        a.name(),
        a.key_type(),
        &a.csr_pem(),
        &b.sealed_key(&master),
        &master,
    )
    .unwrap_err();
    assert!(err.to_string().contains("cannot unseal"), "{err}");
}
