//! DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945): how the ACME manager publishes and withdraws the
//! `_acme-challenge` TXT records of the DNS-01 challenge on a zone's primary name server (BIND, Knot, PowerDNS,
//! Windows DNS with a TSIG key, …), over TCP.
//!
//! The server's answer must carry a valid signature of the same key unless it refuses the key itself (then it cannot
//! sign), so a forged "done" cannot pass; an unsigned refusal is reported as such. Everything read from the network
//! is bounds-checked; a malformed answer is an error, never a panic.
//!
//! Not here: finding the zone's primary (it is configured), GSS-TSIG and SIG(0), following a CNAME of
//! `_acme-challenge` into another zone, and checking that secondaries have the records (the settings' propagation
//! wait stands in for that).

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use aws_lc_rs::hmac;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use zeroize::Zeroizing;

const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_NONE: u16 = 254;
const CLASS_ANY: u16 = 255;
const OPCODE_UPDATE: u16 = 5;
/// Seconds of clock difference either side accepts (RFC 8945 recommends 300).
const FUDGE: u16 = 300;
/// The whole exchange with the server: connect, send, answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The HMAC algorithms of TSIG keys (RFC 8945 §6: SHA-256 is mandatory, SHA-1 and MD5 are not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    pub const NAMES: [&'static str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

    pub fn parse(name: &str) -> Result<Algorithm, String> {
        match name.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Ok(Algorithm::HmacSha256),
            "hmac-sha384" => Ok(Algorithm::HmacSha384),
            "hmac-sha512" => Ok(Algorithm::HmacSha512),
            other => Err(format!(
                "TSIG algorithm {other:?} is not offered: use one of {}",
                Algorithm::NAMES.join(", ")
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Algorithm::HmacSha256 => hmac::HMAC_SHA256,
            Algorithm::HmacSha384 => hmac::HMAC_SHA384,
            Algorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

/// A TSIG key: its name (as the server knows it), algorithm and secret. Not `Debug`: it holds the secret.
pub struct TsigKey {
    pub name: String,
    pub algorithm: Algorithm,
    pub secret: Zeroizing<Vec<u8>>,
}

/// One change of an update.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Add the TXT record `txt` at `name`.
    AddTxt { name: &'a str, txt: &'a str, ttl: u32 },
    /// Delete the TXT record `txt` at `name` (other TXT records there stay).
    DeleteTxt { name: &'a str, txt: &'a str },
}

/// Appends `name` in wire form, lower-cased when `canonical` (TSIG's digest uses the canonical form).
fn push_name(out: &mut Vec<u8>, name: &str, canonical: bool) -> anyhow::Result<()> {
    let name = name.trim_end_matches('.');
    let start = out.len();
    if !name.is_empty() {
        for label in name.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|len| (1..=63).contains(len))
                .ok_or_else(|| anyhow!("{name:?} is not a DNS name: each label has 1 to 63 characters"))?;
            out.push(len);
            if canonical {
                out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
            } else {
                out.extend_from_slice(label.as_bytes());
            }
        }
    }
    out.push(0);
    ensure!(out.len() - start <= 255, "{name:?} is longer than a DNS name may be");
    Ok(())
}

fn push_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn push_u48(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes()[2..]);
}

/// TSIG's variables (RFC 8945 §4.3.3), which the MAC covers after the message.
fn tsig_variables(key: &TsigKey, time_signed: u64, fudge: u16, error: u16, other: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + other.len());
    push_name(&mut out, &key.name, true)?;
    push_u16(&mut out, CLASS_ANY);
    out.extend_from_slice(&0u32.to_be_bytes());
    push_name(&mut out, key.algorithm.name(), true)?;
    push_u48(&mut out, time_signed);
    push_u16(&mut out, fudge);
    push_u16(&mut out, error);
    push_u16(&mut out, u16::try_from(other.len()).context("TSIG other data")?);
    out.extend_from_slice(other);
    Ok(out)
}

/// An UPDATE of `zone` making `changes`, signed with `key` at `time_signed` (Unix seconds): the message and its MAC
/// (which the answer's signature covers).
pub fn update_message(
    id: u16,
    zone: &str,
    changes: &[Change<'_>],
    key: &TsigKey,
    time_signed: u64,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut m = Vec::with_capacity(128 + changes.len() * 96);
    push_u16(&mut m, id);
    push_u16(&mut m, OPCODE_UPDATE << 11);
    push_u16(&mut m, 1); // the zone section's one entry
    push_u16(&mut m, 0); // no prerequisites
    push_u16(
        &mut m,
        u16::try_from(changes.len()).context("too many changes for one update")?,
    );
    push_u16(&mut m, 0); // additional: the TSIG record, counted once it is added
    push_name(&mut m, zone, false)?;
    push_u16(&mut m, TYPE_SOA);
    push_u16(&mut m, CLASS_IN);
    for change in changes {
        let (name, txt, class, ttl) = match *change {
            Change::AddTxt { name, txt, ttl } => (name, txt, CLASS_IN, ttl),
            // RFC 2136 §2.5.4: class NONE deletes the one record that matches.
            Change::DeleteTxt { name, txt } => (name, txt, CLASS_NONE, 0),
        };
        let len = u8::try_from(txt.len()).map_err(|_| anyhow!("a TXT string has at most 255 bytes"))?;
        push_name(&mut m, name, false)?;
        push_u16(&mut m, TYPE_TXT);
        push_u16(&mut m, class);
        m.extend_from_slice(&ttl.to_be_bytes());
        push_u16(&mut m, u16::from(len) + 1);
        m.push(len);
        m.extend_from_slice(txt.as_bytes());
    }

    let signing_key = hmac::Key::new(key.algorithm.hmac(), &key.secret);
    let mut context = hmac::Context::with_key(&signing_key);
    context.update(&m);
    context.update(&tsig_variables(key, time_signed, FUDGE, 0, &[])?);
    let mac = context.sign().as_ref().to_vec();

    push_name(&mut m, &key.name, true)?;
    push_u16(&mut m, TYPE_TSIG);
    push_u16(&mut m, CLASS_ANY);
    m.extend_from_slice(&0u32.to_be_bytes());
    let mut rdata = Vec::with_capacity(32 + mac.len());
    push_name(&mut rdata, key.algorithm.name(), true)?;
    push_u48(&mut rdata, time_signed);
    push_u16(&mut rdata, FUDGE);
    push_u16(&mut rdata, u16::try_from(mac.len()).context("MAC size")?);
    rdata.extend_from_slice(&mac);
    push_u16(&mut rdata, id);
    push_u16(&mut rdata, 0); // error
    push_u16(&mut rdata, 0); // other len
    push_u16(&mut m, u16::try_from(rdata.len()).context("TSIG size")?);
    m.extend_from_slice(&rdata);
    m[10..12].copy_from_slice(&1u16.to_be_bytes());
    ensure!(
        m.len() <= usize::from(u16::MAX),
        "the update is too large for one message"
    );
    Ok((m, mac))
}

/// Reads network bytes with bounds checks: every shortfall is an error.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let end = end.ok_or_else(|| anyhow!("the DNS server's answer is cut short"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> anyhow::Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u48(&mut self) -> anyhow::Result<u64> {
        let b = self.take(6)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// Skips a name; a compression pointer ends it (where it points is not needed).
    fn skip_name(&mut self) -> anyhow::Result<()> {
        for _ in 0..128 {
            let len = self.take(1)?[0];
            match len & 0xC0 {
                0xC0 => {
                    self.take(1)?;
                    return Ok(());
                }
                0 if len == 0 => return Ok(()),
                0 => {
                    self.take(usize::from(len))?;
                }
                _ => bail!("the DNS server's answer has a label type this client does not read"),
            }
        }
        bail!("the DNS server's answer has a name of more than 127 labels")
    }

    /// Skips a resource record; returns its type.
    fn skip_record(&mut self) -> anyhow::Result<u16> {
        self.skip_name()?;
        let kind = self.u16()?;
        self.take(6)?; // class, TTL
        let len = self.u16()?;
        self.take(usize::from(len))?;
        Ok(kind)
    }
}

fn rcode_name(rcode: u16) -> String {
    match rcode {
        1 => "FORMERR (the server could not read the update)".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP (the server does not do dynamic updates)".into(),
        5 => "REFUSED (the key may not update these names: check the zone's update policy)".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH (the server is not authoritative for the zone, or did not accept the key)".into(),
        10 => "NOTZONE (a name is outside the zone)".into(),
        other => format!("response code {other}"),
    }
}

fn tsig_error_name(error: u16) -> String {
    match error {
        16 => "BADSIG: the secret does not match the server's".into(),
        17 => "BADKEY: the server knows no key of that name and algorithm".into(),
        18 => "BADTIME: this host's clock and the server's differ by more than 5 minutes".into(),
        22 => "BADTRUNC".into(),
        other => format!("TSIG error {other}"),
    }
}

/// Checks the server's answer to the update `id` whose MAC was `request_mac`: signed by `key`, within the clock
/// fudge of `now`, and successful.
pub fn check_answer(answer: &[u8], id: u16, request_mac: &[u8], key: &TsigKey, now: u64) -> anyhow::Result<()> {
    let mut r = Reader { buf: answer, pos: 0 };
    let answer_id = r.u16()?;
    let flags = r.u16()?;
    ensure!(
        answer_id == id && flags & 0x8000 != 0 && (flags >> 11) & 0xF == OPCODE_UPDATE,
        "the DNS server's answer is not an answer to the update"
    );
    let rcode = flags & 0xF;
    let zones = r.u16()?;
    let records = u32::from(r.u16()?) + u32::from(r.u16()?);
    let additional = r.u16()?;
    for _ in 0..zones {
        r.skip_name()?;
        r.take(4)?;
    }
    for _ in 0..records {
        r.skip_record()?;
    }
    if additional == 0 {
        if rcode != 0 {
            bail!(
                "the DNS server refused the update: {} (unsigned answer)",
                rcode_name(rcode)
            );
        }
        bail!(
            "the DNS server's answer is not signed: is TSIG key {} known to it?",
            key.name
        );
    }
    for _ in 1..additional {
        r.skip_record()?;
    }
    let tsig_at = r.pos;
    r.skip_name()?;
    ensure!(
        r.u16()? == TYPE_TSIG,
        "the DNS server's answer does not end with a TSIG signature"
    );
    r.take(6)?;
    let rdata_len = usize::from(r.u16()?);
    let rdata_end = r.pos + rdata_len;
    ensure!(rdata_end == answer.len(), "the DNS server's TSIG record is malformed");
    r.skip_name()?;
    let time_signed = r.u48()?;
    let fudge = r.u16()?;
    let mac_len = r.u16()?;
    let mac = r.take(usize::from(mac_len))?;
    let original_id = r.u16()?;
    let error = r.u16()?;
    let other_len = r.u16()?;
    let other = r.take(usize::from(other_len))?;
    ensure!(r.pos == rdata_end, "the DNS server's TSIG record is malformed");
    if error != 0 {
        bail!(
            "the DNS server did not accept TSIG key {} ({}): {}",
            key.name,
            key.algorithm.name(),
            tsig_error_name(error)
        );
    }

    let mut unsigned = answer[..tsig_at].to_vec();
    unsigned[0..2].copy_from_slice(&original_id.to_be_bytes());
    unsigned[10..12].copy_from_slice(&(additional - 1).to_be_bytes());
    let mut signed = Vec::with_capacity(2 + request_mac.len() + unsigned.len() + 64);
    push_u16(&mut signed, u16::try_from(request_mac.len()).context("MAC size")?);
    signed.extend_from_slice(request_mac);
    signed.extend_from_slice(&unsigned);
    signed.extend_from_slice(&tsig_variables(key, time_signed, fudge, error, other)?);
    let verify_key = hmac::Key::new(key.algorithm.hmac(), &key.secret);
    if hmac::verify(&verify_key, &signed, mac).is_err() {
        let code = if rcode == 0 {
            String::new()
        } else {
            format!(" (it says {})", rcode_name(rcode))
        };
        bail!("the DNS server's answer is not signed by TSIG key {}{code}", key.name);
    }
    ensure!(
        now.abs_diff(time_signed) <= u64::from(fudge),
        "the DNS server's clock and this host's differ by more than {fudge} s"
    );
    if rcode != 0 {
        bail!("the DNS server refused the update: {}", rcode_name(rcode));
    }
    Ok(())
}

/// Sends the update of `zone` making `changes` to `server` (`host:port`) and checks its answer.
pub async fn update(server: &str, zone: &str, changes: &[Change<'_>], key: &TsigKey) -> anyhow::Result<()> {
    let mut id = [0u8; 2];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| anyhow!("no randomness for the DNS message id"))?;
    let id = u16::from_be_bytes(id);
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    let (message, mac) = update_message(id, zone, changes, key, now)?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to the DNS server {server}"))?;
        let mut framed = Vec::with_capacity(2 + message.len());
        push_u16(&mut framed, u16::try_from(message.len()).context("message size")?);
        framed.extend_from_slice(&message);
        stream.write_all(&framed).await.context("sending the update")?;
        let len = stream.read_u16().await.context("reading the DNS server's answer")?;
        let mut answer = vec![0u8; usize::from(len)];
        stream
            .read_exact(&mut answer)
            .await
            .context("reading the DNS server's answer")?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("the DNS server {server} did not answer within {} s", TIMEOUT.as_secs()))??;
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    check_answer(&answer, id, &mac, key, now).with_context(|| format!("updating zone {zone} at {server}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_key() -> TsigKey {
        TsigKey {
            name: "Portcullis-ACME.".into(),
            algorithm: Algorithm::HmacSha256,
            secret: Zeroizing::new(b"0123456789abcdef0123456789abcdef".to_vec()),
        }
    }

    /// The answer a server would give to the update `request` (whose MAC is `request_mac`), signed with `key`.
    fn answer(request: &[u8], request_mac: &[u8], key: &TsigKey, rcode: u16, time_signed: u64) -> Vec<u8> {
        let mut a = request[..12].to_vec();
        a[2..4].copy_from_slice(&(0x8000 | (OPCODE_UPDATE << 11) | rcode).to_be_bytes());
        a[4..12].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        let mut signed = Vec::new();
        push_u16(&mut signed, request_mac.len() as u16);
        signed.extend_from_slice(request_mac);
        signed.extend_from_slice(&a);
        signed.extend_from_slice(&tsig_variables(key, time_signed, FUDGE, 0, &[]).expect("vars"));
        let mac = hmac::sign(&hmac::Key::new(key.algorithm.hmac(), &key.secret), &signed);
        push_name(&mut a, &key.name, true).expect("name");
        push_u16(&mut a, TYPE_TSIG);
        push_u16(&mut a, CLASS_ANY);
        a.extend_from_slice(&0u32.to_be_bytes());
        let mut rdata = Vec::new();
        push_name(&mut rdata, key.algorithm.name(), true).expect("name");
        push_u48(&mut rdata, time_signed);
        push_u16(&mut rdata, FUDGE);
        push_u16(&mut rdata, mac.as_ref().len() as u16);
        rdata.extend_from_slice(mac.as_ref());
        rdata.extend_from_slice(&request[0..2]);
        push_u16(&mut rdata, 0);
        push_u16(&mut rdata, 0);
        push_u16(&mut a, rdata.len() as u16);
        a.extend_from_slice(&rdata);
        a[10..12].copy_from_slice(&1u16.to_be_bytes());
        a
    }

    #[test]
    fn updates_are_rfc_2136_messages_signed_over_message_and_variables() {
        let key = test_key();
        let changes = [
            Change::AddTxt {
                name: "_acme-challenge.example.test",
                txt: "abc",
                ttl: 60,
            },
            Change::DeleteTxt {
                name: "_acme-challenge.example.test",
                txt: "old",
            },
        ];
        let (m, mac) = update_message(0x1234, "example.test", &changes, &key, 1_700_000_000).expect("message");
        assert_eq!(&m[0..4], &[0x12, 0x34, 0x28, 0x00], "id, opcode UPDATE");
        assert_eq!(
            &m[4..12],
            &[0, 1, 0, 0, 0, 2, 0, 1],
            "one zone, two updates, the TSIG record"
        );
        assert_eq!(&m[12..30], b"\x07example\x04test\x00\x00\x06\x00\x01");
        // The add is class IN with its TTL, the delete class NONE with TTL 0.
        let add = b"\x0f_acme-challenge\x07example\x04test\x00\x00\x10\x00\x01\x00\x00\x00\x3c\x00\x04\x03abc";
        assert_eq!(&m[30..30 + add.len()], add);
        let del = b"\x0f_acme-challenge\x07example\x04test\x00\x00\x10\x00\xfe\x00\x00\x00\x00\x00\x04\x03old";
        assert_eq!(&m[30 + add.len()..30 + add.len() + del.len()], del);
        // The MAC covers the message without its TSIG record, then the canonical (lower-case) variables.
        let tsig_at = 30 + add.len() + del.len();
        let mut unsigned = m[..tsig_at].to_vec();
        unsigned[10..12].copy_from_slice(&[0, 0]);
        let mut covered = unsigned;
        covered.extend_from_slice(b"\x0fportcullis-acme\x00\x00\xff\x00\x00\x00\x00\x0bhmac-sha256\x00");
        covered.extend_from_slice(&1_700_000_000u64.to_be_bytes()[2..]);
        covered.extend_from_slice(&[0x01, 0x2c, 0, 0, 0, 0]);
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key.secret), &covered);
        assert_eq!(mac, expected.as_ref());
        assert_eq!(mac.len(), 32);
        assert!(
            m[tsig_at..].windows(32).any(|w| w == mac.as_slice()),
            "the MAC is in the record"
        );
    }

    #[test]
    fn answers_must_be_signed_by_the_key_and_successful() {
        let key = test_key();
        let changes = [Change::AddTxt {
            name: "_acme-challenge.example.test",
            txt: "abc",
            ttl: 60,
        }];
        let now = 1_700_000_000;
        let (m, mac) = update_message(7, "example.test", &changes, &key, now).expect("message");
        check_answer(&answer(&m, &mac, &key, 0, now), 7, &mac, &key, now + 2).expect("a good answer");

        let err = check_answer(&answer(&m, &mac, &key, 5, now), 7, &mac, &key, now).expect_err("refused");
        assert!(err.to_string().contains("REFUSED"), "{err}");
        let err = check_answer(&answer(&m, &mac, &key, 0, now), 8, &mac, &key, now).expect_err("other id");
        assert!(err.to_string().contains("not an answer"), "{err}");
        let other = TsigKey {
            secret: Zeroizing::new(b"another secret, just as long ...".to_vec()),
            ..key
        };
        let err = check_answer(&answer(&m, &mac, &other, 0, now), 7, &mac, &test_key(), now).expect_err("forged");
        assert!(err.to_string().contains("not signed by"), "{err}");
        let err =
            check_answer(&answer(&m, &mac, &test_key(), 0, now), 7, &mac, &test_key(), now + 301).expect_err("late");
        assert!(err.to_string().contains("clock"), "{err}");
        // Unsigned: a refusal is reported, a success is not believed.
        let mut unsigned = m[..12].to_vec();
        unsigned[2..4].copy_from_slice(&(0x8000 | (OPCODE_UPDATE << 11) | 9).to_be_bytes());
        unsigned[4..12].copy_from_slice(&[0; 8]);
        let err = check_answer(&unsigned, 7, &mac, &test_key(), now).expect_err("unsigned refusal");
        assert!(err.to_string().contains("NOTAUTH"), "{err}");
        unsigned[3] &= 0xF0;
        let err = check_answer(&unsigned, 7, &mac, &test_key(), now).expect_err("unsigned success");
        assert!(err.to_string().contains("not signed"), "{err}");
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let key = test_key();
        let changes = [Change::AddTxt {
            name: "_acme-challenge.example.test",
            txt: "abc",
            ttl: 60,
        }];
        let (m, mac) = update_message(7, "example.test", &changes, &key, 1).expect("message");
        let good = answer(&m, &mac, &key, 0, 1);
        for cut in 0..good.len() {
            assert!(check_answer(&good[..cut], 7, &mac, &key, 1).is_err(), "cut at {cut}");
        }
        for at in 0..good.len() {
            for byte in [0x00, 0x3f, 0xc0, 0xff] {
                let mut bad = good.clone();
                bad[at] = byte;
                let _ = check_answer(&bad, 7, &mac, &key, 1);
            }
        }
    }

    #[test]
    fn names_and_values_are_checked() {
        let key = test_key();
        let long = "a".repeat(64);
        let name = format!("{long}.example.test");
        let changes = [Change::AddTxt {
            name: &name,
            txt: "abc",
            ttl: 60,
        }];
        let err = update_message(1, "example.test", &changes, &key, 1).expect_err("long label");
        assert!(err.to_string().contains("1 to 63"), "{err}");
        let txt = "x".repeat(256);
        let changes = [Change::AddTxt {
            name: "a.example.test",
            txt: &txt,
            ttl: 60,
        }];
        assert!(update_message(1, "example.test", &changes, &key, 1).is_err());
        assert_eq!(Algorithm::parse("HMAC-SHA512."), Ok(Algorithm::HmacSha512));
        assert!(Algorithm::parse("hmac-md5").expect_err("md5").contains("hmac-sha256"));
    }
}
