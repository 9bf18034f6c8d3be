//! `portcullis list …`: the named IP lists of a running server (Cloudflare's Lists API), which rules reference as
//! `ip.src in $name`. Items are checked here with the server's own parser before anything is sent, so a typo in a
//! file of thousands of addresses is reported with its line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{ApiArgs, ApiClient, account_id, array, print_json, print_table, s};

/// Most JSON bytes per request: well under the API's 1 MiB body limit.
const REQUEST_BYTES: usize = 768 * 1024;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(subcommand)]
    pub command: ListCommand,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ListCommand {
    /// Create an IP list; rules then use it as `ip.src in $NAME`.
    Create {
        /// Lowercase letters, digits and underscores (at most 50).
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show every list with its item count and how many rules use it.
    #[command(visible_alias = "ls")]
    List,
    /// Show a list's items.
    Show { name: String },
    /// Add addresses or CIDR ranges to a list (an item already there gets the new comment).
    Add {
        name: String,
        /// Addresses or CIDR ranges, e.g. 192.0.2.0/24 2001:db8::/32.
        items: Vec<String>,
        /// A file with one address or range per line (`#` starts a comment; blank lines are skipped).
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value = "")]
        comment: String,
        /// Make these the list's only items.
        #[arg(long)]
        replace: bool,
    },
    /// Remove addresses or ranges from a list (as they were added: 192.0.2.0/24 removes that range only).
    Remove { name: String, items: Vec<String> },
    /// Delete a list; refused while a rule references it.
    Delete { name: String },
}

pub async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let api = ApiClient::new(&args.api)?;
    let base = format!("/accounts/{}/rules/lists", account_id(&api).await?);
    match args.command {
        ListCommand::Create { name, description } => {
            let list = api
                .send(
                    Method::POST,
                    &base,
                    &json!({"name": name, "kind": "ip", "description": description}),
                )
                .await?
                .result;
            if args.api.json {
                print_json(&list)?;
            } else {
                outln!("created list ${} ({})", s(&list, "name"), s(&list, "id"));
            }
        }
        ListCommand::List => {
            let lists = api.get(&base).await?.result;
            if args.api.json {
                print_json(&lists)?;
            } else {
                let rows: Vec<_> = array(&lists)
                    .iter()
                    .map(|l| {
                        vec![
                            format!("${}", s(l, "name")),
                            s(l, "kind"),
                            s(l, "num_items"),
                            s(l, "num_referencing_filters"),
                            s(l, "description"),
                            s(l, "id"),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "KIND", "ITEMS", "RULES", "DESCRIPTION", "ID"], &rows);
            }
        }
        ListCommand::Show { name } => {
            let id = list_id(&api, &base, &name).await?;
            let items = all_items(&api, &format!("{base}/{id}/items")).await?;
            if args.api.json {
                print_json(&Value::Array(items))?;
            } else {
                let rows: Vec<_> = items
                    .iter()
                    .map(|i| vec![s(i, "ip"), s(i, "comment"), s(i, "modified_on")])
                    .collect();
                print_table(&["ITEM", "COMMENT", "MODIFIED_ON"], &rows);
            }
        }
        ListCommand::Add {
            name,
            items,
            file,
            comment,
            replace,
        } => {
            let mut values = Vec::new();
            for item in &items {
                // The parser's message quotes the item.
                values.push(canonical(item)?);
            }
            if let Some(path) = &file {
                values.extend(items_from_file(path)?);
            }
            if values.is_empty() && !replace {
                bail!("no items: name some, or give --file");
            }
            let id = list_id(&api, &base, &name).await?;
            let items_path = format!("{base}/{id}/items");
            if replace {
                replace_items(&api, &items_path, &values, &comment).await?;
            } else {
                let items: Vec<Value> = values.iter().map(|ip| json!({"ip": ip, "comment": comment})).collect();
                for chunk in by_size(items) {
                    api.send(Method::POST, &items_path, &Value::Array(chunk)).await?;
                }
            }
            outln!(
                "{} {} item{} {} ${name}",
                if replace { "set" } else { "added" },
                values.len(),
                if values.len() == 1 { "" } else { "s" },
                if replace { "as" } else { "to" }
            );
        }
        ListCommand::Remove { name, items } => {
            if items.is_empty() {
                bail!("name the items to remove");
            }
            let wanted = items.iter().map(|i| canonical(i)).collect::<anyhow::Result<Vec<_>>>()?;
            let id = list_id(&api, &base, &name).await?;
            let items_path = format!("{base}/{id}/items");
            let stored = all_items(&api, &items_path).await?;
            let ids: Vec<Value> = stored
                .iter()
                .filter(|i| wanted.contains(&s(i, "ip")))
                .map(|i| json!({"id": s(i, "id")}))
                .collect();
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|w| !stored.iter().any(|i| &s(i, "ip") == *w))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "not in ${name}: {}",
                    missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            api.send(Method::DELETE, &items_path, &json!({ "items": ids })).await?;
            outln!(
                "removed {} item{} from ${name}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" }
            );
        }
        ListCommand::Delete { name } => {
            let id = list_id(&api, &base, &name).await?;
            api.delete(&format!("{base}/{id}")).await?;
            outln!("deleted list ${name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes `values` (canonical) the items of the list at `items_path`, each with `comment`.
pub(crate) async fn replace_items(
    api: &ApiClient,
    items_path: &str,
    values: &[String],
    comment: &str,
) -> anyhow::Result<()> {
    let items: Vec<Value> = values.iter().map(|ip| json!({"ip": ip, "comment": comment})).collect();
    let chunks = by_size(items);
    if chunks.len() <= 1 {
        // One request: the API replaces the items in one transaction.
        let all = chunks.into_iter().next().unwrap_or_default();
        api.send(Method::PUT, items_path, &Value::Array(all)).await?;
        return Ok(());
    }
    // Several: remove what is not in the new set, then add the rest, so that an item that stays is never missing
    // and the list never holds more than the larger of the two sets (its limit).
    let keep: std::collections::HashSet<&str> = values.iter().map(String::as_str).collect();
    let stale: Vec<Value> = all_items(api, items_path)
        .await?
        .iter()
        .filter(|i| !keep.contains(s(i, "ip").as_str()))
        .map(|i| json!({"id": s(i, "id")}))
        .collect();
    for ids in by_size(stale) {
        api.send(Method::DELETE, items_path, &json!({ "items": ids })).await?;
    }
    for chunk in chunks {
        api.send(Method::POST, items_path, &Value::Array(chunk)).await?;
    }
    Ok(())
}

/// `items` in consecutive groups of at most [`REQUEST_BYTES`] of JSON each.
fn by_size(items: Vec<Value>) -> Vec<Vec<Value>> {
    let mut chunks: Vec<Vec<Value>> = Vec::new();
    let mut size = 0;
    for item in items {
        let len = item.to_string().len() + 1;
        if chunks.is_empty() || size + len > REQUEST_BYTES {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = chunks.last_mut() {
            last.push(item);
        }
    }
    chunks
}

/// The items of a list file, canonical: one address or CIDR range per line, `#` starting a comment, blank lines
/// skipped. An error names the file and line.
pub(crate) fn items_from_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let item = line.split('#').next().unwrap_or("").trim();
        if !item.is_empty() {
            items.push(canonical(item).with_context(|| format!("{}:{}", path.display(), n + 1))?);
        }
    }
    Ok(items)
}

/// An item in the form the server stores it, or why it is not an address or range.
fn canonical(item: &str) -> anyhow::Result<String> {
    portcullis_rules::lists::parse_ip_item(item)
        .map(|(text, _)| text)
        .map_err(anyhow::Error::msg)
}

/// The id of the list called `name` (a leading `$` is allowed).
async fn list_id(api: &ApiClient, base: &str, name: &str) -> anyhow::Result<String> {
    let name = name.trim_start_matches('$');
    let lists = api.get(base).await?.result;
    array(&lists)
        .iter()
        .find(|l| s(l, "name") == name)
        .map(|l| s(l, "id"))
        .with_context(|| format!("no list named {name:?} (`portcullis list ls` shows them)"))
}

/// Every item of a list, following the cursors.
pub(crate) async fn all_items(api: &ApiClient, items_path: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{items_path}?per_page=500&cursor={c}"),
            None => format!("{items_path}?per_page=500"),
        };
        let page = api.get(&path).await?;
        out.extend(array(&page.result).iter().cloned());
        cursor = page
            .result_info
            .as_ref()
            .and_then(|i| i["cursors"]["after"].as_str())
            .map(str::to_owned);
        if cursor.is_none() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stay_under_the_body_limit_and_keep_every_item_in_order() {
        let items: Vec<Value> = (0..60_000u32)
            .map(|i| json!({"ip": std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(), "comment": "x".repeat(40)}))
            .collect();
        let chunks = by_size(items.clone());
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            assert!(Value::Array(chunk.clone()).to_string().len() <= REQUEST_BYTES);
        }
        assert_eq!(chunks.concat(), items);
        assert!(by_size(Vec::new()).is_empty());
    }
}
