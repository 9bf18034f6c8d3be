//! Named lists that expressions reference with `in $name` (Cloudflare's custom lists), and the IP
//! range sets behind both lists and inline `in {…}` sets of addresses.
//!
//! A [`Lists`] is handed to [`crate::compile_with`]; each `$name` is resolved there, once, so a
//! compiled program holds the list's ranges (shared, not copied) and never looks names up while
//! evaluating. Only IP lists exist: Cloudflare's other kinds (hostname, ASN, redirect) feed
//! features Portcullis does not have. Does not store lists or track who references them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Longest list name, as Cloudflare's.
pub const MAX_LIST_NAME: usize = 50;

/// Address ranges, sorted and merged where they overlap, for a binary-search lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRanges(Box<[(IpAddr, IpAddr)]>);

impl IpRanges {
    /// Sorts `ranges` (each start ≤ end, one address family) and merges overlapping ones.
    pub(crate) fn new(mut ranges: Vec<(IpAddr, IpAddr)>) -> IpRanges {
        ranges.sort_unstable();
        let mut merged: Vec<(IpAddr, IpAddr)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                // Sorted by start, and IPv4 sorts before IPv6, so only same-family ranges meet here.
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        IpRanges(merged.into_boxed_slice())
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) lies in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let after = self.0.partition_point(|(start, _)| *start <= ip);
        after > 0 && ip <= self.0[after - 1].1
    }

    /// How many disjoint ranges remain after merging.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no ranges.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One named list's contents.
#[derive(Debug, Clone)]
pub enum List {
    /// An IP list: addresses and CIDR ranges, for IP fields such as `ip.src`.
    Ip(Arc<IpRanges>),
}

/// Lists by name, for [`crate::compile_with`].
#[derive(Debug, Clone, Default)]
pub struct Lists {
    by_name: HashMap<String, List>,
    /// Lists that exist but were not loaded (the caller loads only those an expression names): offered in
    /// "did you mean" hints, never resolved.
    unloaded: Vec<String>,
}

impl Lists {
    /// No lists.
    pub fn new() -> Lists {
        Lists::default()
    }

    /// Adds (or replaces) the IP list `name` with `items`, each as [`parse_ip_item`] accepts.
    pub fn insert_ip<'a>(&mut self, name: &str, items: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        check_list_name(name)?;
        let ranges = items
            .into_iter()
            .map(|item| parse_ip_item(item).map(|(_, range)| range))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("list {name}: {e}"))?;
        self.by_name
            .insert(name.to_owned(), List::Ip(Arc::new(IpRanges::new(ranges))));
        Ok(())
    }

    /// The list called `name`.
    pub fn get(&self, name: &str) -> Option<&List> {
        self.by_name.get(name)
    }

    /// Records that a list called `name` exists without loading it, so that a misspelt `$name` can suggest it.
    pub fn insert_unloaded(&mut self, name: &str) {
        if !self.by_name.contains_key(name) {
            self.unloaded.push(name.to_owned());
        }
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().chain(&self.unloaded).map(String::as_str)
    }
}

/// Checks a list name against Cloudflare's rule: 1 to 50 lowercase letters, digits and underscores.
pub fn check_list_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_LIST_NAME {
        return Err(format!(
            "a list name must be 1 to {MAX_LIST_NAME} characters, found {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "a list name may hold only lowercase letters, digits and underscores, found {c:?} in {name:?}"
        ));
    }
    Ok(())
}

/// Parses an IP list item: an address (`192.0.2.1`, `2001:db8::1`) or a CIDR range (`192.0.2.0/24`,
/// `2001:db8::/32`). Returns the item in its canonical text form (how it is stored and shown) and the
/// range it covers. A CIDR with bits set after the prefix is refused, as Cloudflare does, since it
/// usually means a typo.
pub fn parse_ip_item(item: &str) -> Result<(String, (IpAddr, IpAddr)), String> {
    let text = item.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return Ok((ip.to_string(), (ip, ip)));
    }
    match text.parse::<ipnet::IpNet>().map(canonical_net) {
        Ok(net) if net.trunc() == net => Ok((net.to_string(), (net.network(), net.broadcast()))),
        Ok(net) => Err(format!(
            "{text:?} has bits set after its /{} prefix; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        )),
        Err(_) => Err(format!("{text:?} is not an IP address or CIDR range")),
    }
}

/// `net`, with an IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120`) turned into the IPv4 network it maps
/// (`192.0.2.0/24`): clients' addresses are compared in their IPv4 form, so the IPv6 form could never match.
pub(crate) fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    if let ipnet::IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(mapped) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return ipnet::IpNet::V4(mapped);
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(items: &[&str]) -> IpRanges {
        IpRanges::new(items.iter().map(|i| parse_ip_item(i).unwrap().1).collect())
    }

    #[test]
    fn merged_ranges_answer_like_a_linear_scan() {
        let items = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.0.2.7",
            "192.0.2.0/30",
            "2001:db8::/32",
            "2001:db8:1::1",
            "198.51.100.255",
        ];
        let set = ranges(&items);
        assert_eq!(
            set.len(),
            5,
            "10.1/16 folds into 10/8, 2001:db8:1::1 into 2001:db8::/32"
        );
        let probes = [
            "9.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "11.0.0.0",
            "192.0.2.3",
            "192.0.2.4",
            "192.0.2.7",
            "198.51.100.255",
            "::ffff:10.2.3.4",
            "2001:db8:ffff::1",
            "2001:db9::",
            "::",
        ];
        for p in probes {
            let ip: IpAddr = p.parse().unwrap();
            let linear = items.iter().any(|i| {
                let (_, (a, b)) = parse_ip_item(i).unwrap();
                a <= ip.to_canonical() && ip.to_canonical() <= b
            });
            assert_eq!(set.contains(ip), linear, "{p}");
        }
    }

    #[test]
    fn items_are_canonical_and_typos_are_named() {
        assert_eq!(parse_ip_item(" 192.0.2.1 ").unwrap().0, "192.0.2.1");
        assert_eq!(parse_ip_item("::ffff:192.0.2.1").unwrap().0, "192.0.2.1");
        assert_eq!(parse_ip_item("2001:DB8::/32").unwrap().0, "2001:db8::/32");
        assert_eq!(parse_ip_item("::ffff:192.0.2.0/120").unwrap().0, "192.0.2.0/24");
        let mapped = ranges(&["::ffff:192.0.2.0/120"]);
        assert!(mapped.contains("192.0.2.77".parse().unwrap()));
        assert!(mapped.contains("::ffff:192.0.2.77".parse().unwrap()));
        assert_eq!(
            parse_ip_item("10.0.0.1/8").unwrap_err(),
            "\"10.0.0.1/8\" has bits set after its /8 prefix; did you mean 10.0.0.0/8?"
        );
        assert!(parse_ip_item("10.0.0.0/33").unwrap_err().contains("not an IP address"));
        assert!(parse_ip_item("example.com").is_err());
    }

    #[test]
    fn list_names_follow_cloudflare() {
        assert!(check_list_name("office_ips_2").is_ok());
        assert!(check_list_name("Office").unwrap_err().contains("'O'"));
        assert!(check_list_name("").is_err());
        assert!(check_list_name(&"a".repeat(51)).is_err());
        let mut lists = Lists::new();
        assert!(lists.insert_ip("bad-name", ["192.0.2.1"]).is_err());
        assert!(
            lists
                .insert_ip("x", ["192.0.2.1", "nope"])
                .unwrap_err()
                .starts_with("list x: ")
        );
    }
}
