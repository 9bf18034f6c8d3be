//! Named lists (Cloudflare's custom lists): the lists, their items, and the record of each change to the items.
//!
//! Item values arrive canonical (the caller parses them with the rules engine); the store keeps them unique per list,
//! enforces the size limits, and refuses to delete a list that a rule references. It does not parse addresses.

use crate::Store;
use crate::db::{RowExt, commit_write, on_db};
use crate::error::{StoreError, is_foreign_key_violation, is_unique_violation};
use crate::ids::{new_id, now};
use crate::model::{Actor, EdgeList, List, ListItem, ListOperation, NewListItem};

/// Most lists an account may hold.
pub const MAX_LISTS: i64 = 1_000;
/// Most items one list may hold.
pub const MAX_LIST_ITEMS: i64 = 100_000;
/// Most items all lists together may hold (each is loaded into every edge node's memory).
pub const MAX_TOTAL_LIST_ITEMS: i64 = 1_000_000;
/// Most items one page of `list_items` returns.
pub const MAX_LIST_ITEMS_PER_PAGE: u32 = 500;
/// Longest item comment and list description.
pub const MAX_LIST_TEXT: usize = 500;

/// How long finished operations can be looked up.
const OPERATIONS_KEPT_SECONDS: i64 = 7 * 24 * 3600;

/// Rows per multi-row INSERT: 5 parameters each stays far below both backends' parameter limits.
const INSERT_CHUNK: usize = 500;

macro_rules! list_select {
    () => {
        "SELECT l.id, l.name, l.description, l.kind, l.created_on, l.modified_on, \
         (SELECT COUNT(*) FROM list_items i WHERE i.list_id = l.id) AS num_items, \
         (SELECT COUNT(*) FROM rule_list_refs r WHERE r.list_id = l.id) AS num_referencing_filters \
         FROM lists l"
    };
}

/// Writes the list's row first, which locks it for the transaction on PostgreSQL (SQLite has one writer at a time),
/// so two item changes to one list are counted one after the other; not found if the list does not exist.
macro_rules! lock_list {
    ($tx:ident, $list_id:expr) => {
        let locked = sqlx::query("UPDATE lists SET modified_on = modified_on WHERE id = $1")
            .bind($list_id)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        if locked == 0 {
            return Err(StoreError::not_found("list", $list_id));
        }
    };
}

/// Refuses the transaction's result when the list or all lists together hold more items than allowed.
macro_rules! check_item_counts {
    ($tx:ident, $list_id:expr) => {
        let in_list: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM list_items WHERE list_id = $1")
            .bind($list_id)
            .fetch_one(&mut *$tx)
            .await?;
        if in_list > MAX_LIST_ITEMS {
            return Err(StoreError::LimitReached {
                code: 10030,
                message: format!("the list would hold {in_list} items; the limit is {MAX_LIST_ITEMS}"),
            });
        }
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM list_items")
            .fetch_one(&mut *$tx)
            .await?;
        if total > MAX_TOTAL_LIST_ITEMS {
            return Err(StoreError::LimitReached {
                code: 10030,
                message: format!("all lists together would hold {total} items; the limit is {MAX_TOTAL_LIST_ITEMS}"),
            });
        }
    };
}

/// Marks the list modified and records the finished operation.
macro_rules! touch_and_record {
    ($tx:ident, $list_id:expr, $at:expr, $operation:expr) => {
        sqlx::query("UPDATE lists SET modified_on = $1 WHERE id = $2")
            .bind($at)
            .bind($list_id)
            .execute(&mut *$tx)
            .await?;
        // Clients poll an operation right after the change; a week of them is plenty.
        sqlx::query("DELETE FROM list_operations WHERE completed_on < $1")
            .bind($at - OPERATIONS_KEPT_SECONDS)
            .execute(&mut *$tx)
            .await?;
        sqlx::query(
            "INSERT INTO list_operations (id, list_id, status, error, completed_on) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&$operation.id)
        .bind($list_id)
        .bind(&$operation.status)
        .bind($operation.error.as_deref())
        .bind($operation.completed_on)
        .execute(&mut *$tx)
        .await?;
    };
}

/// Every list (or those named in `$names`, an `Option<&[String]>`) with its items' values, read through `$exec`
/// (a pool, or a transaction for a consistent edge state). Expands inside an `on_db!` body.
macro_rules! edge_lists {
    ($exec:expr, $names:expr) => {{
        let names: Option<std::collections::HashSet<&str>> =
            $names.map(|n: &[String]| n.iter().map(String::as_str).collect());
        let wanted = |name: &str| names.as_ref().is_none_or(|n| n.contains(name));
        let mut lists: Vec<$crate::model::EdgeList> = Vec::new();
        for r in sqlx::query("SELECT name, kind FROM lists ORDER BY name")
            .fetch_all($exec)
            .await?
        {
            let name = r.text("name")?;
            if wanted(&name) {
                lists.push($crate::model::EdgeList {
                    name,
                    kind: r.text("kind")?,
                    values: Vec::new(),
                });
            }
        }
        for list in &mut lists {
            list.values = sqlx::query_scalar(
                "SELECT i.value FROM list_items i JOIN lists l ON l.id = i.list_id WHERE l.name = $1 ORDER BY i.value",
            )
            .bind(&list.name)
            .fetch_all($exec)
            .await?;
        }
        lists
    }};
}
pub(crate) use edge_lists;

impl Store {
    /// Every list named in `names` (all with `None`) with its items' values, for compiling rules.
    pub async fn edge_lists(&self, names: Option<&[String]>) -> Result<Vec<EdgeList>, StoreError> {
        on_db!(&self.db, |pool| Ok(edge_lists!(pool, names)))
    }

    /// Creates an empty list. `name` must be unique; checking its spelling is the caller's.
    pub async fn create_list(
        &self,
        name: &str,
        kind: &str,
        description: &str,
        actor: &Actor,
    ) -> Result<List, StoreError> {
        check_text("description", description)?;
        let id = new_id();
        let at = now();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // Two creates at once must not both pass the limit: the account row serialises them (PostgreSQL; SQLite
            // has one writer anyway).
            sqlx::query("UPDATE accounts SET name = name").execute(&mut *tx).await?;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lists")
                .fetch_one(&mut *tx)
                .await?;
            if count >= MAX_LISTS {
                return Err(StoreError::LimitReached {
                    code: 10027,
                    message: format!("the account already has {MAX_LISTS} lists, the limit"),
                });
            }
            let inserted = sqlx::query(
                "INSERT INTO lists (id, account_id, name, description, kind, created_on, modified_on) \
                 SELECT $1, id, $2, $3, $4, $5, $5 FROM accounts",
            )
            .bind(&id)
            .bind(name)
            .bind(description)
            .bind(kind)
            .bind(at)
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(err) if is_unique_violation(&err) => {
                    return Err(StoreError::Conflict(format!("a list named {name:?} already exists")));
                }
                other => other?,
            };
            commit_write!(self, tx, actor, "create", "list", &id, name);
        });
        self.list(&id).await
    }

    /// All lists, by name.
    pub async fn lists(&self) -> Result<Vec<List>, StoreError> {
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(concat!(list_select!(), " ORDER BY l.name"))
                .fetch_all(pool)
                .await?;
            rows.iter().map(list_from_row).collect()
        })
    }

    /// The list `id`.
    pub async fn list(&self, id: &str) -> Result<List, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(concat!(list_select!(), " WHERE l.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => list_from_row(&row),
                None => Err(StoreError::not_found("list", id)),
            }
        })
    }

    /// Changes the list's description (its name and kind are fixed, as on Cloudflare).
    pub async fn update_list(&self, id: &str, description: &str, actor: &Actor) -> Result<List, StoreError> {
        check_text("description", description)?;
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query("UPDATE lists SET description = $1, modified_on = $2 WHERE id = $3")
                .bind(description)
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::not_found("list", id));
            }
            commit_write!(self, tx, actor, "update", "list", id, "");
        });
        self.list(id).await
    }

    /// Deletes the list and its items; refused while a rule references it.
    pub async fn delete_list(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let name: Option<String> = sqlx::query_scalar("SELECT name FROM lists WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(name) = name else {
                return Err(StoreError::not_found("list", id));
            };
            let in_use = || {
                StoreError::Conflict(format!(
                    "the list ${name} is referenced by rules; remove it from their expressions first"
                ))
            };
            let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rule_list_refs WHERE list_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            if refs > 0 {
                return Err(in_use());
            }
            // A rule written between the count and this delete makes the foreign key refuse it.
            match sqlx::query("DELETE FROM lists WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
            {
                Err(err) if is_foreign_key_violation(&err) => return Err(in_use()),
                other => other?,
            };
            commit_write!(self, tx, actor, "delete", "list", id, &name);
        });
        Ok(())
    }

    /// One page of the list's items, ordered by id: `after` is the previous page's last id (Cloudflare's opaque
    /// cursor), `search` keeps items whose value or comment contains it. Returns the items and, when more follow,
    /// the cursor of the next page.
    pub async fn list_items(
        &self,
        list_id: &str,
        after: Option<&str>,
        per_page: u32,
        search: Option<&str>,
    ) -> Result<(Vec<ListItem>, Option<String>), StoreError> {
        self.list(list_id).await?;
        let per_page = per_page.clamp(1, MAX_LIST_ITEMS_PER_PAGE);
        // Lower-cased on both sides, by the database: LIKE ignores ASCII case on SQLite and not on PostgreSQL, and
        // each database's lower() is the one its stored text is compared with.
        let pattern = search.map(|s| format!("%{}%", escape_like(s)));
        on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT id, value, comment, created_on, modified_on FROM list_items \
                 WHERE list_id = $1 AND id > $2 \
                 AND ($3 IS NULL OR lower(value) LIKE lower($3) ESCAPE '\\' \
                      OR lower(comment) LIKE lower($3) ESCAPE '\\') \
                 ORDER BY id LIMIT $4",
            )
            .bind(list_id)
            .bind(after.unwrap_or(""))
            .bind(pattern.as_deref())
            .bind(i64::from(per_page) + 1)
            .fetch_all(pool)
            .await?;
            let mut items = rows.iter().map(item_from_row).collect::<Result<Vec<_>, _>>()?;
            let next = if items.len() > per_page as usize {
                items.truncate(per_page as usize);
                items.last().map(|i| i.id.clone())
            } else {
                None
            };
            Ok((items, next))
        })
    }

    /// One item of the list.
    pub async fn list_item(&self, list_id: &str, item_id: &str) -> Result<ListItem, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query(
                "SELECT id, value, comment, created_on, modified_on FROM list_items WHERE list_id = $1 AND id = $2",
            )
            .bind(list_id)
            .bind(item_id)
            .fetch_optional(pool)
            .await?;
            match row {
                Some(row) => item_from_row(&row),
                None => Err(StoreError::not_found("list item", item_id)),
            }
        })
    }

    /// Adds `items` to the list (an item whose value is already there gets the new comment), or with `replace`
    /// makes them the list's only items. All or nothing; the returned operation is complete.
    pub async fn write_list_items(
        &self,
        list_id: &str,
        items: Vec<NewListItem>,
        replace: bool,
        actor: &Actor,
    ) -> Result<ListOperation, StoreError> {
        for item in &items {
            check_text("comment", &item.comment)?;
        }
        // The same value twice: the later comment wins (one statement may not write a row twice on PostgreSQL).
        let mut seen = std::collections::HashSet::new();
        let mut items: Vec<NewListItem> = items
            .into_iter()
            .rev()
            .filter(|i| seen.insert(i.value.clone()))
            .collect();
        items.reverse();
        let at = now();
        let operation = completed(list_id, at);
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            // The total over all lists is checked below: writes to different lists are serialised by the account
            // row (PostgreSQL; SQLite has one writer anyway).
            sqlx::query("UPDATE accounts SET name = name").execute(&mut *tx).await?;
            lock_list!(tx, list_id);
            if replace {
                sqlx::query("DELETE FROM list_items WHERE list_id = $1")
                    .bind(list_id)
                    .execute(&mut *tx)
                    .await?;
            }
            for chunk in items.chunks(INSERT_CHUNK) {
                let mut sql = String::from(
                    "INSERT INTO list_items (id, list_id, value, comment, created_on, modified_on) VALUES ",
                );
                for i in 0..chunk.len() {
                    let p = i * 5;
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 5
                    ));
                }
                sql.push_str(
                    " ON CONFLICT (list_id, value) DO UPDATE SET comment = excluded.comment, \
                     modified_on = excluded.modified_on",
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                for item in chunk {
                    query = query
                        .bind(new_id())
                        .bind(list_id)
                        .bind(&item.value)
                        .bind(&item.comment)
                        .bind(at);
                }
                query.execute(&mut *tx).await?;
            }
            check_item_counts!(tx, list_id);
            touch_and_record!(tx, list_id, at, &operation);
            let detail = format!("{} items{}", items.len(), if replace { ", replacing" } else { "" });
            commit_write!(
                self,
                tx,
                actor,
                if replace { "replace_items" } else { "add_items" },
                "list",
                list_id,
                &detail
            );
        });
        Ok(operation)
    }

    /// Removes the items with these ids from the list; ids that are not in it are ignored, as on Cloudflare.
    pub async fn delete_list_items(
        &self,
        list_id: &str,
        item_ids: &[String],
        actor: &Actor,
    ) -> Result<ListOperation, StoreError> {
        let at = now();
        let operation = completed(list_id, at);
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            lock_list!(tx, list_id);
            for id in item_ids {
                sqlx::query("DELETE FROM list_items WHERE list_id = $1 AND id = $2")
                    .bind(list_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            touch_and_record!(tx, list_id, at, &operation);
            let detail = format!("{} items", item_ids.len());
            commit_write!(self, tx, actor, "delete_items", "list", list_id, &detail);
        });
        Ok(operation)
    }

    /// A finished change to a list's items, by its operation id.
    pub async fn list_operation(&self, id: &str) -> Result<ListOperation, StoreError> {
        on_db!(&self.db, |pool| {
            let row = sqlx::query("SELECT id, list_id, status, error, completed_on FROM list_operations WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            let Some(row) = row else {
                return Err(StoreError::not_found("bulk operation", id));
            };
            Ok(ListOperation {
                id: row.text("id")?,
                list_id: row.text("list_id")?,
                status: row.text("status")?,
                error: row.opt_text("error")?,
                completed_on: row.int("completed_on")?,
            })
        })
    }
}

/// The record of a change to a list's items, finished at `at`.
fn completed(list_id: &str, at: i64) -> ListOperation {
    ListOperation {
        id: new_id(),
        list_id: list_id.to_owned(),
        status: "completed".to_owned(),
        error: None,
        completed_on: at,
    }
}

fn check_text(what: &str, text: &str) -> Result<(), StoreError> {
    if text.len() > MAX_LIST_TEXT {
        return Err(StoreError::Invalid(format!(
            "{what} is {} bytes; the limit is {MAX_LIST_TEXT}",
            text.len()
        )));
    }
    Ok(())
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
pub(crate) fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn list_from_row(row: &impl RowExt) -> Result<List, StoreError> {
    Ok(List {
        id: row.text("id")?,
        name: row.text("name")?,
        description: row.text("description")?,
        kind: row.text("kind")?,
        num_items: row.int("num_items")?,
        num_referencing_filters: row.int("num_referencing_filters")?,
        created_on: row.int("created_on")?,
        modified_on: row.int("modified_on")?,
    })
}

fn item_from_row(row: &impl RowExt) -> Result<ListItem, StoreError> {
    Ok(ListItem {
        id: row.text("id")?,
        value: row.text("value")?,
        comment: row.text("comment")?,
        created_on: row.int("created_on")?,
        modified_on: row.int("modified_on")?,
    })
}
