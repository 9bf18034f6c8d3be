//! Rulesets: `/zones/{zone_id}/rulesets/phases/http_request_firewall_custom/entrypoint`, the ruleset calls Terraform
//! uses (`/zones/{zone_id}/rulesets[/{ruleset_id}]`) and the rule calls,
//! in Cloudflare's shapes. Every write compiles the whole resulting ruleset first, so an invalid expression (reported
//! with its caret diagnostic) or a bad custom response never reaches the store.

use crate::api::Path;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use portcullis_rules::{Action, ActionParameters, CompiledRuleset, Lists, RateLimit, RuleProblem, RulesetError};
use portcullis_store::{Actor, NewRule, Position, Rule, Ruleset};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiResult, codes, ok};
use crate::auth::ZoneLimit;
use crate::time_fmt::rfc3339;

/// The custom rules' phase.
pub const PHASE: &str = "http_request_firewall_custom";
/// The rate-limiting rules' phase, evaluated after the custom rules.
pub const RATELIMIT_PHASE: &str = "http_ratelimit";
/// Every phase Portcullis evaluates.
const PHASES: [&str; 2] = [PHASE, RATELIMIT_PHASE];

/// A rule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub version: String,
    pub action: String,
    pub expression: String,
    pub description: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub action_parameters: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ratelimit: Option<serde_json::Value>,
    pub last_updated: String,
}

/// A ruleset as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: &'static str,
    pub phase: String,
    pub version: String,
    pub last_updated: String,
    pub rules: Vec<RuleView>,
}

fn rule_view(rule: Rule) -> RuleView {
    RuleView {
        reference: rule.id.clone(),
        id: rule.id,
        version: rule.version.to_string(),
        action: rule.action,
        expression: rule.expression,
        description: rule.description,
        enabled: rule.enabled,
        action_parameters: rule.action_parameters,
        ratelimit: rule.ratelimit,
        last_updated: rfc3339(rule.last_updated),
    }
}

fn ruleset_view(rs: Ruleset) -> RulesetView {
    RulesetView {
        id: rs.id,
        name: rs.name,
        description: rs.description,
        kind: "zone",
        phase: rs.phase,
        version: rs.version.to_string(),
        last_updated: rfc3339(rs.last_updated),
        rules: rs.rules.into_iter().map(rule_view).collect(),
    }
}

/// A rule in a request body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    #[serde(default)]
    pub id: Option<String>,
    /// Accepted for compatibility with Cloudflare exports; Portcullis uses `id`.
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    /// Accepted and ignored: versions are assigned by the server.
    #[serde(default)]
    #[allow(dead_code)]
    pub version: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    pub last_updated: Option<String>,
    #[serde(default)]
    pub description: String,
    pub expression: String,
    #[schema(value_type = String, example = "block")]
    pub action: Action,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub action_parameters: Option<ActionParameters>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Rate-limiting parameters, for rules of the `http_ratelimit` phase only.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ratelimit: Option<RateLimit>,
    /// Where to put a new rule (POST) or move an existing one (PATCH).
    #[serde(default)]
    pub position: Option<PositionInput>,
}

fn yes() -> bool {
    true
}

/// Cloudflare's `position`: exactly one of `before`, `after` or `index`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PositionInput {
    pub before: Option<String>,
    pub after: Option<String>,
    pub index: Option<u32>,
}

impl PositionInput {
    fn resolve(&self) -> Result<Position, ApiError> {
        match (&self.before, &self.after, self.index) {
            (Some(id), None, None) if id.is_empty() => Ok(Position::Index(1)),
            (Some(id), None, None) => Ok(Position::Before(id.clone())),
            (None, Some(id), None) if id.is_empty() => Ok(Position::Last),
            (None, Some(id), None) => Ok(Position::After(id.clone())),
            (None, None, Some(index)) => Ok(Position::Index(index)),
            _ => Err(ApiError::invalid(
                "position must have exactly one of before, after or index",
            )),
        }
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Block => "block",
        Action::Log => "log",
        Action::Skip => "skip",
    }
}

impl RuleInput {
    fn id(&self) -> Option<String> {
        self.id
            .clone()
            .or_else(|| self.reference.clone())
            .filter(|id| !id.is_empty())
    }

    fn to_new_rule(&self) -> Result<NewRule, ApiError> {
        use crate::api::{MAX_DESCRIPTION_CHARS, MAX_RULE_ID_BYTES, check_text};
        for (what, id) in [("id", &self.id), ("ref", &self.reference)] {
            if let Some(id) = id
                && (id.len() > MAX_RULE_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(ApiError::invalid(format!(
                    "rule {what} must be at most {MAX_RULE_ID_BYTES} printable ASCII characters without spaces"
                )));
            }
        }
        check_text("description", &self.description, MAX_DESCRIPTION_CHARS)?;
        let action_parameters = match &self.action_parameters {
            Some(params) => Some(serde_json::to_value(params).map_err(ApiError::internal)?),
            None => None,
        };
        Ok(NewRule {
            id: self.id(),
            description: self.description.clone(),
            expression: self.expression.clone(),
            action: action_name(self.action).to_owned(),
            action_parameters,
            enabled: self.enabled,
            ratelimit: match &self.ratelimit {
                Some(rl) => Some(serde_json::to_value(rl).map_err(ApiError::internal)?),
                None => None,
            },
            // Filled in when the ruleset is compiled.
            lists: Vec::new(),
        })
    }
}

/// The rules engine's view of a stored rule, to compile a whole ruleset before it is written.
fn engine_rule(rule: &NewRule) -> Result<portcullis_rules::Rule, ApiError> {
    let action = match rule.action.as_str() {
        "block" => Action::Block,
        "log" => Action::Log,
        "skip" => Action::Skip,
        other => {
            return Err(ApiError::internal(format!("stored rule has unknown action {other:?}")));
        }
    };
    let action_parameters = match &rule.action_parameters {
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(ApiError::internal)?),
        None => None,
    };
    Ok(portcullis_rules::Rule {
        id: rule.id.clone(),
        description: rule.description.clone(),
        expression: rule.expression.clone(),
        action,
        action_parameters,
        enabled: rule.enabled,
        ratelimit: match &rule.ratelimit {
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(ApiError::internal)?),
            None => None,
        },
    })
}

fn stored_as_new(rule: &Rule) -> NewRule {
    NewRule {
        id: Some(rule.id.clone()),
        description: rule.description.clone(),
        expression: rule.expression.clone(),
        action: rule.action.clone(),
        action_parameters: rule.action_parameters.clone(),
        enabled: rule.enabled,
        ratelimit: rule.ratelimit.clone(),
        lists: rule.lists.clone(),
    }
}

/// Compiles `rules` as one ruleset of `phase` with the lists they name, and records in each rule the lists its
/// expression references (the store keeps those lists from being deleted). The error names the rule and, for
/// expressions, shows the caret diagnostic. Expressions already in `stored` (the ruleset as it is) are compiled as
/// stored rules are: a check added after they were written (wrong-case hex literals) refuses new and changed
/// expressions, but never blocks edits of other rules of a ruleset that an earlier version accepted.
async fn compile(
    state: &AdminState,
    phase: &str,
    rules: &mut [NewRule],
    stored: &[Rule],
    suggest: Suggest,
) -> Result<(), ApiError> {
    let lists = lists_named_in(state, rules.iter().map(|r| r.expression.as_str()), suggest).await?;
    let ruleset = portcullis_rules::Ruleset {
        rules: rules.iter().map(engine_rule).collect::<Result<_, _>>()?,
    };
    let compiled = CompiledRuleset::compile_stored(&ruleset, phase == RATELIMIT_PHASE, &lists)
        .map_err(|err| ruleset_error(&err, rules))?;
    let old: std::collections::HashSet<&str> = stored.iter().map(|r| r.expression.as_str()).collect();
    for (index, rule) in rules.iter().enumerate() {
        if old.contains(rule.expression.as_str()) {
            continue;
        }
        if let Err(e) = portcullis_rules::compile_with(&rule.expression, &lists) {
            let err = RulesetError {
                index,
                id: rule.id.clone(),
                problem: RuleProblem::Expression(e),
            };
            return Err(ruleset_error(&err, rules));
        }
    }
    for (rule, compiled) in rules.iter_mut().zip(compiled.rules()) {
        rule.lists = compiled.program().lists().to_vec();
    }
    Ok(())
}

/// Rules in the API's input shape for `phase`, checked as writing the whole phase checks them (with `lists`; an
/// expression in `current`, the phase's rules now, skips the checks an older version did not make, as writes do),
/// and in the form the API stores and shows them: description, expression, action, enabled, and the action
/// parameters and rate limit with their defaults filled in. For clients that check rules before writing them and
/// compare them with the server's (`portcullis apply`). Errors name the rule by its position (from 1).
pub fn normalize_rules(
    phase: &str,
    rules: &[serde_json::Value],
    lists: &Lists,
    current: &std::collections::HashSet<String>,
) -> Result<Vec<serde_json::Value>, String> {
    let mut new = Vec::with_capacity(rules.len());
    for (n, rule) in rules.iter().enumerate() {
        let input: RuleInput = serde_json::from_value(rule.clone()).map_err(|e| format!("rule {}: {e}", n + 1))?;
        new.push(
            input
                .to_new_rule()
                .map_err(|e| format!("rule {}: {}", n + 1, e.message))?,
        );
    }
    let ruleset = portcullis_rules::Ruleset {
        rules: new
            .iter()
            .map(engine_rule)
            .collect::<Result<_, _>>()
            .map_err(|e| e.message)?,
    };
    CompiledRuleset::compile_stored(&ruleset, phase == RATELIMIT_PHASE, lists)
        .map_err(|err| ruleset_error(&err, &new).message)?;
    for (index, rule) in new.iter().enumerate() {
        if current.contains(&rule.expression) {
            continue;
        }
        if let Err(e) = portcullis_rules::compile_with(&rule.expression, lists) {
            let err = RulesetError {
                index,
                id: rule.id.clone(),
                problem: RuleProblem::Expression(e),
            };
            return Err(ruleset_error(&err, &new).message);
        }
    }
    Ok(new
        .into_iter()
        .map(|rule| {
            let mut out = serde_json::json!({
                "description": rule.description,
                "expression": rule.expression,
                "action": rule.action,
                "enabled": rule.enabled,
            });
            if let Some(params) = rule.action_parameters {
                out["action_parameters"] = params;
            }
            if let Some(ratelimit) = rule.ratelimit {
                out["ratelimit"] = ratelimit;
            }
            out
        })
        .collect())
}

/// Whether a caller may be shown the names of lists it did not name (in "did you mean" hints): not a token limited to
/// some zones, which cannot list the account's lists either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suggest {
    ListNames,
    Nothing,
}

impl Suggest {
    pub(crate) fn for_caller(limit: &Option<Extension<ZoneLimit>>) -> Suggest {
        if limit.is_some() {
            Suggest::Nothing
        } else {
            Suggest::ListNames
        }
    }
}

/// The stored lists whose names appear after a `$` in any of `expressions`: every list they can reference (a `$`
/// inside a string literal only loads a list for nothing), without loading every list's items.
pub(crate) async fn lists_named_in<'a>(
    state: &AdminState,
    expressions: impl Iterator<Item = &'a str>,
    suggest: Suggest,
) -> Result<Lists, ApiError> {
    let mut names = std::collections::BTreeSet::new();
    // An expression over the size limit fails to compile anyway; scanning it would only cost time.
    for expression in expressions.filter(|e| e.len() <= portcullis_rules::MAX_EXPRESSION_BYTES) {
        for (i, _) in expression.match_indices('$') {
            let name: String = expression[i + 1..]
                .chars()
                .take(portcullis_rules::lists::MAX_LIST_NAME + 1)
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
        // More names than there can be lists: the rest cannot all exist, and compiling says which is unknown.
        if names.len() > portcullis_store::MAX_LISTS as usize {
            break;
        }
    }
    let names: Vec<String> = names.into_iter().collect();
    let mut lists = Lists::new();
    if names.is_empty() {
        return Ok(lists);
    }
    let loaded = state.store.edge_lists(Some(&names)).await?;
    if loaded.len() < names.len() && suggest == Suggest::ListNames {
        // A name that is not a list: let the compiler suggest the closest one that is.
        for list in state.store.lists().await? {
            lists.insert_unloaded(&list.name);
        }
    }
    for list in &loaded {
        add_list(&mut lists, list).map_err(ApiError::internal)?;
    }
    Ok(lists)
}

/// Adds a stored list to `lists` for compiling; an error means stored data the rules engine no longer accepts.
pub fn add_list(lists: &mut Lists, list: &portcullis_store::EdgeList) -> Result<(), String> {
    match list.kind.as_str() {
        "ip" => lists.insert_ip(&list.name, list.values.iter().map(String::as_str)),
        other => Err(format!("list {} has unknown kind {other:?}", list.name)),
    }
}

/// Compiles a zone's stored rules of `phase` for the edge, with every list. They were compiled when written, so an
/// error here means the rules engine changed under stored data; the message names the rule.
pub fn compile_stored(phase: &str, rules: &[Rule], lists: &Lists) -> Result<CompiledRuleset, String> {
    let rules: Vec<NewRule> = rules.iter().map(stored_as_new).collect();
    let ruleset = portcullis_rules::Ruleset {
        rules: rules
            .iter()
            .map(engine_rule)
            .collect::<Result<_, _>>()
            .map_err(|e| e.message)?,
    };
    CompiledRuleset::compile_stored(&ruleset, phase == RATELIMIT_PHASE, lists).map_err(|e| e.to_string())
}

fn ruleset_error(err: &RulesetError, rules: &[NewRule]) -> ApiError {
    let message = match (&err.problem, rules.get(err.index)) {
        (RuleProblem::Expression(e), Some(rule)) => {
            format!("{err}\n{}", e.render(&rule.expression))
        }
        _ => err.to_string(),
    };
    ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID, message)
}

/// `PUT …/entrypoint` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEntrypoint {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Accepted for Cloudflare compatibility; must be `zone` if given.
    #[serde(default)]
    pub kind: Option<String>,
    /// Accepted for Cloudflare compatibility; must be this phase if given.
    #[serde(default)]
    pub phase: Option<String>,
    pub rules: Vec<RuleInput>,
}

fn check_phase(phase: &str) -> Result<(), ApiError> {
    if PHASES.contains(&phase) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("phase {phase:?} is not supported; Portcullis evaluates {PHASE:?} and {RATELIMIT_PHASE:?}"),
        ))
    }
}

/// Get the zone's entry-point ruleset of a phase.
#[utoipa::path(get, path = "/zones/{zone_id}/rulesets/phases/{phase}/entrypoint", tag = "rulesets",
    params(("zone_id" = String, Path, description = "Zone id"), ("phase" = String, Path, description = "http_request_firewall_custom")),
    responses((status = 200, description = "The ruleset", body = RulesetView)))]
pub async fn get_entrypoint(
    State(state): State<AdminState>,
    Path((zone_id, phase)): Path<(String, String)>,
) -> ApiResult {
    check_phase(&phase)?;
    match state.store.entrypoint(&zone_id, &phase).await? {
        Some(rs) => Ok(ok(ruleset_view(rs))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("zone {zone_id:?} has no entry-point ruleset for {phase:?} yet; PUT one"),
        )),
    }
}

/// Create or replace the zone's entry-point ruleset of a phase.
#[utoipa::path(put, path = "/zones/{zone_id}/rulesets/phases/{phase}/entrypoint", tag = "rulesets",
    request_body = PutEntrypoint,
    params(("zone_id" = String, Path, description = "Zone id"), ("phase" = String, Path, description = "http_request_firewall_custom")),
    responses((status = 200, description = "The ruleset", body = RulesetView)))]
pub async fn put_entrypoint(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    limit: Option<Extension<ZoneLimit>>,
    Path((zone_id, phase)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutEntrypoint>,
) -> ApiResult {
    check_phase(&phase)?;
    let rs = replace(
        &state,
        &zone_id,
        &phase,
        body,
        None,
        &actor,
        Suggest::for_caller(&limit),
    )
    .await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::OK, ruleset_view(rs)).await)
}

/// Validates `body` for `phase`, compiles its rules and writes them as the zone's ruleset of that phase.
/// `current` keeps its name and description when the body leaves them out.
async fn replace(
    state: &AdminState,
    zone_id: &str,
    phase: &str,
    body: PutEntrypoint,
    current: Option<&Ruleset>,
    actor: &Actor,
    suggest: Suggest,
) -> Result<Ruleset, ApiError> {
    write(state, zone_id, phase, body, current, false, (actor, suggest)).await
}

/// [`replace`], or with `create_only` a create that fails if the ruleset exists by the time it is written.
async fn write(
    state: &AdminState,
    zone_id: &str,
    phase: &str,
    body: PutEntrypoint,
    current: Option<&Ruleset>,
    create_only: bool,
    (actor, suggest): (&Actor, Suggest),
) -> Result<Ruleset, ApiError> {
    if body.kind.as_deref().is_some_and(|k| k != "zone") {
        return Err(ApiError::invalid("kind must be \"zone\""));
    }
    if body.phase.as_deref().is_some_and(|p| p != phase) {
        return Err(ApiError::invalid(format!("phase in the body must be {phase:?}")));
    }
    if body.rules.iter().any(|r| r.position.is_some()) {
        return Err(ApiError::invalid(
            "position is only accepted when adding or moving one rule",
        ));
    }
    let mut rules = body
        .rules
        .iter()
        .map(RuleInput::to_new_rule)
        .collect::<Result<Vec<_>, _>>()?;
    // The rules as stored now, whose expressions are compiled as stored rules are (see `compile`).
    let loaded = match current {
        Some(_) => None,
        None => state.store.entrypoint(zone_id, phase).await?,
    };
    let stored = current.or(loaded.as_ref()).map_or(&[][..], |rs| rs.rules.as_slice());
    compile(state, phase, &mut rules, stored, suggest).await?;
    if let Some(name) = &body.name {
        crate::api::check_text("name", name, crate::api::MAX_NAME_CHARS)?;
    }
    if let Some(description) = &body.description {
        crate::api::check_text("description", description, crate::api::MAX_DESCRIPTION_CHARS)?;
    }
    let name = body
        .name
        .or_else(|| current.map(|rs| rs.name.clone()))
        .unwrap_or_else(|| "default".to_owned());
    let description = body
        .description
        .or_else(|| current.map(|rs| rs.description.clone()))
        .unwrap_or_default();
    let store = &state.store;
    Ok(if create_only {
        store
            .create_entrypoint(zone_id, phase, &name, &description, rules, actor)
            .await?
    } else {
        store
            .put_entrypoint(zone_id, phase, &name, &description, rules, actor)
            .await?
    })
}

/// A ruleset in a list: everything but its rules, as Cloudflare lists them.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesetSummary {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: &'static str,
    pub phase: String,
    pub version: String,
    pub last_updated: String,
}

/// List the zone's rulesets (Portcullis has at most one: the `http_request_firewall_custom` entry point).
#[utoipa::path(get, path = "/zones/{zone_id}/rulesets", tag = "rulesets",
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The zone's rulesets, without their rules", body = [RulesetSummary])))]
pub async fn list_rulesets(State(state): State<AdminState>, Path(zone_id): Path<String>) -> ApiResult {
    let list: Vec<RulesetSummary> = state
        .store
        .rulesets(&zone_id)
        .await?
        .into_iter()
        .map(|rs| RulesetSummary {
            id: rs.id,
            name: rs.name,
            description: rs.description,
            kind: "zone",
            phase: rs.phase,
            version: rs.version.to_string(),
            last_updated: rfc3339(rs.last_updated),
        })
        .collect();
    Ok(crate::api::ok_all(list))
}

/// Create the zone's entry-point ruleset (as Terraform's `cloudflare_ruleset` does); 409 if it exists already.
#[utoipa::path(post, path = "/zones/{zone_id}/rulesets", tag = "rulesets", request_body = PutEntrypoint,
    params(("zone_id" = String, Path, description = "Zone id")),
    responses((status = 200, description = "The new ruleset", body = RulesetView)))]
pub async fn create_ruleset(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    limit: Option<Extension<ZoneLimit>>,
    Path(zone_id): Path<String>,
    ApiJson(body): ApiJson<PutEntrypoint>,
) -> ApiResult {
    let phase = body.phase.clone().ok_or_else(|| {
        ApiError::invalid(format!(
            "phase is required; Portcullis evaluates {PHASE:?} and {RATELIMIT_PHASE:?}"
        ))
    })?;
    if !PHASES.contains(&phase.as_str()) {
        return Err(ApiError::invalid(format!(
            "phase {phase:?} is not supported; Portcullis evaluates {PHASE:?} and {RATELIMIT_PHASE:?}"
        )));
    }
    // The store refuses it if the ruleset exists, also when another writer created it a moment ago.
    let rs = write(
        &state,
        &zone_id,
        &phase,
        body,
        None,
        true,
        (&actor, Suggest::for_caller(&limit)),
    )
    .await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::OK, ruleset_view(rs)).await)
}

/// Get a ruleset.
#[utoipa::path(get, path = "/zones/{zone_id}/rulesets/{ruleset_id}", tag = "rulesets",
    params(("zone_id" = String, Path, description = "Zone id"), ("ruleset_id" = String, Path, description = "Ruleset id")),
    responses((status = 200, description = "The ruleset", body = RulesetView)))]
pub async fn get_ruleset(
    State(state): State<AdminState>,
    Path((zone_id, ruleset_id)): Path<(String, String)>,
) -> ApiResult {
    Ok(ok(ruleset_view(state.store.ruleset(&zone_id, &ruleset_id).await?)))
}

/// Replace a ruleset's rules (and name or description when given).
#[utoipa::path(put, path = "/zones/{zone_id}/rulesets/{ruleset_id}", tag = "rulesets", request_body = PutEntrypoint,
    params(("zone_id" = String, Path, description = "Zone id"), ("ruleset_id" = String, Path, description = "Ruleset id")),
    responses((status = 200, description = "The ruleset", body = RulesetView)))]
pub async fn put_ruleset(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    limit: Option<Extension<ZoneLimit>>,
    Path((zone_id, ruleset_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutEntrypoint>,
) -> ApiResult {
    let current = state.store.ruleset(&zone_id, &ruleset_id).await?;
    let phase = current.phase.clone();
    let rs = replace(
        &state,
        &zone_id,
        &phase,
        body,
        Some(&current),
        &actor,
        Suggest::for_caller(&limit),
    )
    .await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::OK, ruleset_view(rs)).await)
}

/// Delete a ruleset and its rules (204, no body, as Cloudflare answers).
#[utoipa::path(delete, path = "/zones/{zone_id}/rulesets/{ruleset_id}", tag = "rulesets",
    params(("zone_id" = String, Path, description = "Zone id"), ("ruleset_id" = String, Path, description = "Ruleset id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_ruleset(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, ruleset_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_ruleset(&zone_id, &ruleset_id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add a rule to a ruleset (at the end, or at `position`).
#[utoipa::path(post, path = "/zones/{zone_id}/rulesets/{ruleset_id}/rules", tag = "rulesets",
    request_body = RuleInput,
    params(("zone_id" = String, Path, description = "Zone id"), ("ruleset_id" = String, Path, description = "Ruleset id")),
    responses((status = 200, description = "The whole ruleset, with the new rule", body = RulesetView)))]
pub async fn add_rule(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    limit: Option<Extension<ZoneLimit>>,
    Path((zone_id, ruleset_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<RuleInput>,
) -> ApiResult {
    let current = state.store.ruleset(&zone_id, &ruleset_id).await?;
    let new = body.to_new_rule()?;
    let position = body
        .position
        .as_ref()
        .map(PositionInput::resolve)
        .transpose()?
        .unwrap_or(Position::Last);
    // Compile the ruleset as it will be (order does not change validity, so appending is enough to check).
    let mut all: Vec<NewRule> = current.rules.iter().map(stored_as_new).collect();
    all.push(new);
    compile(
        &state,
        &current.phase,
        &mut all,
        &current.rules,
        Suggest::for_caller(&limit),
    )
    .await?;
    let new = all
        .pop()
        .ok_or_else(|| ApiError::internal("the new rule went missing"))?;
    let rs = state
        .store
        .add_rule(&zone_id, &ruleset_id, new, position, &actor)
        .await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::OK, ruleset_view(rs)).await)
}

/// `PATCH …/rules/{rule_id}` body: fields to change; absent ones stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRule {
    #[serde(default)]
    pub id: Option<String>,
    /// Accepted for compatibility (a GET result can be sent back); ignored.
    #[serde(default, rename = "ref")]
    #[allow(dead_code)]
    pub reference: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub last_updated: Option<String>,
    pub description: Option<String>,
    pub expression: Option<String>,
    #[schema(value_type = Option<String>)]
    pub action: Option<Action>,
    #[schema(value_type = Option<Object>)]
    pub action_parameters: Option<ActionParameters>,
    pub enabled: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub ratelimit: Option<RateLimit>,
    pub position: Option<PositionInput>,
}

/// Change a rule (and optionally move it).
#[utoipa::path(patch, path = "/zones/{zone_id}/rulesets/{ruleset_id}/rules/{rule_id}", tag = "rulesets",
    request_body = PatchRule,
    params(("zone_id" = String, Path, description = "Zone id"), ("ruleset_id" = String, Path, description = "Ruleset id"),
           ("rule_id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "The whole ruleset", body = RulesetView)))]
pub async fn update_rule(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    limit: Option<Extension<ZoneLimit>>,
    Path((zone_id, ruleset_id, rule_id)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<PatchRule>,
) -> ApiResult {
    if body.id.as_deref().is_some_and(|id| id != rule_id) {
        return Err(ApiError::invalid("a rule's id cannot be changed"));
    }
    let current = state.store.ruleset(&zone_id, &ruleset_id).await?;
    let existing = current
        .rules
        .iter()
        .find(|r| r.id == rule_id)
        .ok_or_else(|| ApiError::not_found("rule", &rule_id))?;
    let mut updated = stored_as_new(existing);
    if let Some(description) = body.description {
        updated.description = description;
    }
    if let Some(expression) = body.expression {
        updated.expression = expression;
    }
    if let Some(action) = body.action {
        // Parameters belong to their action: a block's response means nothing to a skip, and the reverse.
        if updated.action != action_name(action) {
            updated.action_parameters = None;
        }
        updated.action = action_name(action).to_owned();
    }
    if let Some(params) = body.action_parameters {
        updated.action_parameters = Some(serde_json::to_value(params).map_err(ApiError::internal)?);
    }
    if let Some(enabled) = body.enabled {
        updated.enabled = enabled;
    }
    if let Some(rl) = body.ratelimit {
        updated.ratelimit = Some(serde_json::to_value(rl).map_err(ApiError::internal)?);
    }
    let mut all: Vec<NewRule> = current
        .rules
        .iter()
        .map(|r| {
            if r.id == rule_id {
                updated.clone()
            } else {
                stored_as_new(r)
            }
        })
        .collect();
    compile(
        &state,
        &current.phase,
        &mut all,
        &current.rules,
        Suggest::for_caller(&limit),
    )
    .await?;
    let updated = all
        .into_iter()
        .zip(&current.rules)
        .find(|(_, r)| r.id == rule_id)
        .map(|(n, _)| n)
        .ok_or_else(|| ApiError::not_found("rule", &rule_id))?;
    let position = body.position.as_ref().map(PositionInput::resolve).transpose()?;
    let rs = state
        .store
        .update_rule(&zone_id, &ruleset_id, &rule_id, updated, position, &actor)
        .await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::OK, ruleset_view(rs)).await)
}

/// Delete a rule.
#[utoipa::path(delete, path = "/zones/{zone_id}/rulesets/{ruleset_id}/rules/{rule_id}", tag = "rulesets",
    params(("zone_id" = String, Path, description = "Zone id"), ("ruleset_id" = String, Path, description = "Ruleset id"),
           ("rule_id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "The whole ruleset, without the rule", body = RulesetView)))]
pub async fn delete_rule(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((zone_id, ruleset_id, rule_id)): Path<(String, String, String)>,
) -> ApiResult {
    let rs = state.store.delete_rule(&zone_id, &ruleset_id, &rule_id, &actor).await?;
    Ok(crate::mtls_check::answer(&state, &zone_id, StatusCode::OK, ruleset_view(rs)).await)
}
