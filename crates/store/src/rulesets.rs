//! Rulesets and rules: each zone has at most one entry-point ruleset per phase, holding an ordered list of rules.
//! Expressions are compiled (and so validated) by the caller before they reach the store.

use crate::Store;
use crate::db::{RowExt, commit_write, on_db};
use crate::error::{StoreError, is_unique_violation};
use crate::ids::{new_id, now};
use crate::model::{Actor, NewRule, Rule, Ruleset};

/// Most rules one ruleset may hold.
pub const MAX_RULES: usize = 10_000;

macro_rules! rule_columns {
    () => {
        "id, description, expression, action, action_parameters, enabled, version, last_updated, ratelimit, lists"
    };
}

/// Inserts `$rules` in order as the rules of `$ruleset_id`, inside an `on_db!` body's transaction `$tx`.
macro_rules! insert_rules {
    ($tx:ident, $ruleset_id:expr, $rules:expr) => {
        for (position, rule) in $rules.iter().enumerate() {
            sqlx::query(concat!(
                "INSERT INTO rules (ruleset_id, position, ",
                rule_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind($ruleset_id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&rule.id)
            .bind(&rule.description)
            .bind(&rule.expression)
            .bind(&rule.action)
            .bind(
                rule.action_parameters
                    .as_ref()
                    .map(|v: &serde_json::Value| v.to_string()),
            )
            .bind(i64::from(rule.enabled))
            .bind(rule.version)
            .bind(rule.last_updated)
            .bind(rule.ratelimit.as_ref().map(|v: &serde_json::Value| v.to_string()))
            .bind(rule.lists.join(" "))
            .execute(&mut *$tx)
            .await?;
            for list in &rule.lists {
                let linked = sqlx::query(
                    "INSERT INTO rule_list_refs (ruleset_id, rule_id, list_id) SELECT $1, $2, id FROM lists WHERE name = $3",
                )
                .bind($ruleset_id)
                .bind(&rule.id)
                .bind(list)
                .execute(&mut *$tx)
                .await;
                match linked {
                    Ok(done) if done.rows_affected() == 0 => {
                        return Err(StoreError::Invalid(format!(
                            "rule {:?} references the list ${list}, which does not exist",
                            rule.id
                        )));
                    }
                    Err(err) if crate::error::is_foreign_key_violation(&err) => {
                        return Err(StoreError::Conflict(format!(
                            "the list ${list} was deleted while rule {:?} was being written; retry",
                            rule.id
                        )));
                    }
                    other => {
                        other?;
                    }
                }
            }
        }
    };
}

/// Where a new rule goes in its ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// After every existing rule.
    Last,
    /// At this 1-based index (Cloudflare's `position.index`); past the end means last.
    Index(u32),
    /// Just before the rule with this id.
    Before(String),
    /// Just after the rule with this id.
    After(String),
}

impl Store {
    /// The zone's entry-point ruleset for `phase`, if one exists.
    pub async fn entrypoint(&self, zone_id: &str, phase: &str) -> Result<Option<Ruleset>, StoreError> {
        self.zone(zone_id).await?;
        on_db!(&self.db, |pool| {
            let row = sqlx::query(
                "SELECT id, zone_id, phase, name, description, version, last_updated FROM rulesets \
                 WHERE zone_id = $1 AND phase = $2",
            )
            .bind(zone_id)
            .bind(phase)
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let id = row.text("id")?;
            let rules = sqlx::query(concat!(
                "SELECT ",
                rule_columns!(),
                " FROM rules WHERE ruleset_id = $1 ORDER BY position"
            ))
            .bind(&id)
            .fetch_all(pool)
            .await?;
            Ok(Some(Ruleset {
                id,
                zone_id: row.text("zone_id")?,
                phase: row.text("phase")?,
                name: row.text("name")?,
                description: row.text("description")?,
                version: row.int("version")?,
                last_updated: row.int("last_updated")?,
                rules: rules.iter().map(rule_from_row).collect::<Result<_, _>>()?,
            }))
        })
    }

    /// The ruleset `ruleset_id` of zone `zone_id`.
    pub async fn ruleset(&self, zone_id: &str, ruleset_id: &str) -> Result<Ruleset, StoreError> {
        self.zone(zone_id).await?;
        self.ruleset_by_id(zone_id, ruleset_id).await
    }

    /// The zone's rulesets (at most one per phase), without their rules' order mattering to the caller.
    pub async fn rulesets(&self, zone_id: &str) -> Result<Vec<Ruleset>, StoreError> {
        self.zone(zone_id).await?;
        let phases: Vec<String> = on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT phase FROM rulesets WHERE zone_id = $1 ORDER BY phase")
                .bind(zone_id)
                .fetch_all(pool)
                .await?
        });
        let mut out = Vec::with_capacity(phases.len());
        for phase in phases {
            out.extend(self.entrypoint(zone_id, &phase).await?);
        }
        Ok(out)
    }

    /// Deletes the ruleset `ruleset_id` of zone `zone_id` and its rules.
    pub async fn delete_ruleset(&self, zone_id: &str, ruleset_id: &str, actor: &Actor) -> Result<(), StoreError> {
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let phase: Option<String> =
                sqlx::query_scalar("DELETE FROM rulesets WHERE id = $1 AND zone_id = $2 RETURNING phase")
                    .bind(ruleset_id)
                    .bind(zone_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(phase) = phase else {
                return Err(StoreError::not_found("ruleset", ruleset_id));
            };
            commit_write!(self, tx, actor, "delete", "ruleset", ruleset_id, &phase);
        });
        Ok(())
    }

    /// Creates or replaces the zone's entry-point ruleset for `phase` with `rules`, in order.
    pub async fn put_entrypoint(
        &self,
        zone_id: &str,
        phase: &str,
        name: &str,
        description: &str,
        rules: Vec<NewRule>,
        actor: &Actor,
    ) -> Result<Ruleset, StoreError> {
        self.write_entrypoint(zone_id, phase, name, description, rules, false, actor)
            .await
    }

    /// Creates the zone's entry-point ruleset for `phase`; a conflict if it exists, even when another writer
    /// created it a moment ago (two creates never silently replace each other's rules).
    pub async fn create_entrypoint(
        &self,
        zone_id: &str,
        phase: &str,
        name: &str,
        description: &str,
        rules: Vec<NewRule>,
        actor: &Actor,
    ) -> Result<Ruleset, StoreError> {
        self.write_entrypoint(zone_id, phase, name, description, rules, true, actor)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_entrypoint(
        &self,
        zone_id: &str,
        phase: &str,
        name: &str,
        description: &str,
        rules: Vec<NewRule>,
        create_only: bool,
        actor: &Actor,
    ) -> Result<Ruleset, StoreError> {
        if rules.len() > MAX_RULES {
            return Err(StoreError::Invalid(format!(
                "too many rules: {} (at most {MAX_RULES})",
                rules.len()
            )));
        }
        let existing = self.entrypoint(zone_id, phase).await?;
        let exists = |id: &str| {
            StoreError::Conflict(format!(
                "zone {zone_id:?} already has the {phase:?} ruleset {id:?}; PUT /zones/{zone_id}/rulesets/{id} replaces it"
            ))
        };
        if create_only && let Some(rs) = &existing {
            return Err(exists(&rs.id));
        }
        let at = now();
        let ruleset_id = existing.as_ref().map_or_else(new_id, |r| r.id.clone());
        let version = existing.as_ref().map_or(1, |r| r.version + 1);
        let rules: Vec<Rule> = rules.into_iter().map(|r| new_rule(r, at)).collect();
        check_unique_ids(&rules)?;
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            if existing.is_some() {
                sqlx::query(
                    "UPDATE rulesets SET name = $1, description = $2, version = $3, last_updated = $4 WHERE id = $5",
                )
                .bind(name)
                .bind(description)
                .bind(version)
                .bind(at)
                .bind(&ruleset_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM rules WHERE ruleset_id = $1")
                    .bind(&ruleset_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                let inserted = sqlx::query(
                    "INSERT INTO rulesets (id, zone_id, phase, name, description, version, last_updated) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&ruleset_id)
                .bind(zone_id)
                .bind(phase)
                .bind(name)
                .bind(description)
                .bind(version)
                .bind(at)
                .execute(&mut *tx)
                .await;
                match inserted {
                    // Another writer created it between our read and this insert.
                    Err(err) if is_unique_violation(&err) => {
                        return Err(StoreError::Conflict(format!(
                            "zone {zone_id:?} got a {phase:?} ruleset from another writer just now; read it and try again"
                        )));
                    }
                    other => other?,
                };
            }
            insert_rules!(tx, &ruleset_id, &rules);
            commit_write!(self, tx, actor, "replace", "ruleset", &ruleset_id, phase);
        });
        self.entrypoint(zone_id, phase)
            .await?
            .ok_or_else(|| StoreError::not_found("ruleset", &ruleset_id))
    }

    /// Adds `rule` to the ruleset `ruleset_id` of zone `zone_id` at `position`.
    pub async fn add_rule(
        &self,
        zone_id: &str,
        ruleset_id: &str,
        rule: NewRule,
        position: Position,
        actor: &Actor,
    ) -> Result<Ruleset, StoreError> {
        let mut ruleset = self.ruleset_by_id(zone_id, ruleset_id).await?;
        if ruleset.rules.len() >= MAX_RULES {
            return Err(StoreError::Invalid(format!(
                "the ruleset already holds {MAX_RULES} rules"
            )));
        }
        let rule = new_rule(rule, now());
        let index = resolve_position(&ruleset.rules, &position)?;
        ruleset.rules.insert(index, rule);
        check_unique_ids(&ruleset.rules)?;
        self.rewrite_rules(ruleset, actor, "add_rule").await
    }

    /// Changes the rule `rule_id`: its fields are replaced by `rule`'s (its id is kept), and with a `position` it
    /// also moves.
    pub async fn update_rule(
        &self,
        zone_id: &str,
        ruleset_id: &str,
        rule_id: &str,
        rule: NewRule,
        position: Option<Position>,
        actor: &Actor,
    ) -> Result<Ruleset, StoreError> {
        let mut ruleset = self.ruleset_by_id(zone_id, ruleset_id).await?;
        let index = ruleset
            .rules
            .iter()
            .position(|r| r.id == rule_id)
            .ok_or_else(|| StoreError::not_found("rule", rule_id))?;
        let mut old = ruleset.rules.remove(index);
        old.description = rule.description;
        old.expression = rule.expression;
        old.action = rule.action;
        old.action_parameters = rule.action_parameters;
        old.ratelimit = rule.ratelimit;
        old.lists = rule.lists;
        old.enabled = rule.enabled;
        old.version += 1;
        old.last_updated = now();
        let index = match &position {
            Some(position) => resolve_position(&ruleset.rules, position)?,
            None => index,
        };
        ruleset.rules.insert(index, old);
        self.rewrite_rules(ruleset, actor, "update_rule").await
    }

    /// Deletes the rule `rule_id`.
    pub async fn delete_rule(
        &self,
        zone_id: &str,
        ruleset_id: &str,
        rule_id: &str,
        actor: &Actor,
    ) -> Result<Ruleset, StoreError> {
        let mut ruleset = self.ruleset_by_id(zone_id, ruleset_id).await?;
        let before = ruleset.rules.len();
        ruleset.rules.retain(|r| r.id != rule_id);
        if ruleset.rules.len() == before {
            return Err(StoreError::not_found("rule", rule_id));
        }
        self.rewrite_rules(ruleset, actor, "delete_rule").await
    }

    async fn ruleset_by_id(&self, zone_id: &str, ruleset_id: &str) -> Result<Ruleset, StoreError> {
        let phase: Option<String> = on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT phase FROM rulesets WHERE zone_id = $1 AND id = $2")
                .bind(zone_id)
                .bind(ruleset_id)
                .fetch_optional(pool)
                .await?
        });
        let phase = phase.ok_or_else(|| StoreError::not_found("ruleset", ruleset_id))?;
        self.entrypoint(zone_id, &phase)
            .await?
            .ok_or_else(|| StoreError::not_found("ruleset", ruleset_id))
    }

    /// Writes `ruleset.rules` back, in order, if the ruleset's version is still the one read (else a conflict:
    /// two concurrent edits must not silently lose one).
    async fn rewrite_rules(&self, ruleset: Ruleset, actor: &Actor, action: &str) -> Result<Ruleset, StoreError> {
        let at = now();
        on_db!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE rulesets SET version = version + 1, last_updated = $1 WHERE id = $2 AND version = $3",
            )
            .bind(at)
            .bind(&ruleset.id)
            .bind(ruleset.version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::Conflict(format!(
                    "ruleset {:?} changed while this edit was being made; retry",
                    ruleset.id
                )));
            }
            sqlx::query("DELETE FROM rules WHERE ruleset_id = $1")
                .bind(&ruleset.id)
                .execute(&mut *tx)
                .await?;
            insert_rules!(tx, &ruleset.id, &ruleset.rules);
            commit_write!(self, tx, actor, action, "ruleset", &ruleset.id, &ruleset.phase);
        });
        self.ruleset_by_id(&ruleset.zone_id, &ruleset.id).await
    }
}

fn new_rule(rule: NewRule, at: i64) -> Rule {
    Rule {
        id: rule.id.unwrap_or_else(new_id),
        description: rule.description,
        expression: rule.expression,
        action: rule.action,
        action_parameters: rule.action_parameters,
        ratelimit: rule.ratelimit,
        lists: rule.lists,
        enabled: rule.enabled,
        version: 1,
        last_updated: at,
    }
}

fn check_unique_ids(rules: &[Rule]) -> Result<(), StoreError> {
    let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    match ids.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(StoreError::Invalid(format!("rule id {:?} appears twice", w[0]))),
        None => Ok(()),
    }
}

fn resolve_position(rules: &[Rule], position: &Position) -> Result<usize, StoreError> {
    let find = |id: &str| {
        rules
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| StoreError::Invalid(format!("no rule {id:?} to position against")))
    };
    Ok(match position {
        Position::Last => rules.len(),
        Position::Index(0) => {
            return Err(StoreError::Invalid("position index starts at 1".to_owned()));
        }
        Position::Index(i) => usize::try_from(*i - 1).unwrap_or(usize::MAX).min(rules.len()),
        Position::Before(id) => find(id)?,
        Position::After(id) => find(id)? + 1,
    })
}

pub(crate) fn rule_from_row(row: &impl RowExt) -> Result<Rule, StoreError> {
    let json = |column: &str| -> Result<Option<serde_json::Value>, StoreError> {
        match row.opt_text(column)? {
            Some(text) => Ok(Some(serde_json::from_str(&text).map_err(|err| {
                sqlx::Error::ColumnDecode {
                    index: column.to_owned(),
                    source: Box::new(err),
                }
            })?)),
            None => Ok(None),
        }
    };
    let action_parameters = json("action_parameters")?;
    let ratelimit = json("ratelimit")?;
    Ok(Rule {
        id: row.text("id")?,
        description: row.text("description")?,
        expression: row.text("expression")?,
        action: row.text("action")?,
        action_parameters,
        ratelimit,
        lists: row.text("lists")?.split_whitespace().map(str::to_owned).collect(),
        enabled: row.flag("enabled")?,
        version: row.int("version")?,
        last_updated: row.int("last_updated")?,
    })
}
