//! Rulesets: ordered rules with actions, in Cloudflare's JSON shape, compiled into a
//! [`CompiledRuleset`] that evaluates in first-match order.
//!
//! Actions: `block` (terminating; optional custom response), `skip` (stops evaluation of the
//! remaining rules; nothing else is skipped, as there are no other phases here) and `log`
//! (recorded, evaluation continues). Disabled rules are compiled (so they are validated) but
//! never evaluated.
//!
//! Rules are indexed by the literals they require: a rule that can only match when some byte
//! string read from the request equals one of a few literals (`http.host eq "…"`,
//! `http.request.uri.path in {…}`, `http.request.headers["x"][0] eq "…"`, through `and` and
//! `or`; see `Program::required_atoms`) is evaluated only for requests where one does. A request
//! evaluates the rules its values select plus the rules that require nothing, still in ruleset
//! order, so a thousand rules on different paths or hosts cost a few hash lookups.

use std::collections::HashSet;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::compile::{Accessor, Program, compile_opts};
use crate::error::CompileError;
use crate::lists::Lists;
use crate::ratelimit::{Characteristic, CompiledRateLimit, RateLimit};
use crate::schema::{Context, FieldSet};

/// Largest custom response body, in bytes (Cloudflare: "up to 2 KB").
pub const MAX_RESPONSE_BYTES: usize = 2048;

/// Content types a custom block response may have.
pub const RESPONSE_CONTENT_TYPES: &[&str] = &["text/html", "text/plain", "application/json", "text/xml"];

/// What a rule does when its expression matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Refuse the request (403, or the custom response). Terminating.
    Block,
    /// Record the match and continue.
    Log,
    /// Skip what `action_parameters` names: the remaining rules of the ruleset (`"ruleset": "current"`, also
    /// the meaning of a `skip` without parameters) and/or later phases (`"phases": ["http_ratelimit"]`).
    Skip,
}

/// A custom response for `block`: `{"status_code":403,"content":"…","content_type":"application/json"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResponse {
    /// 400 to 499.
    pub status_code: u16,
    /// The body, at most [`MAX_RESPONSE_BYTES`].
    pub content: String,
    /// One of [`RESPONSE_CONTENT_TYPES`].
    pub content_type: String,
}

/// The phases a `skip` rule may name. Only `http_ratelimit` exists in Portcullis; Cloudflare's managed-rules and
/// Super Bot Fight Mode phases are accepted, so rules written for Cloudflare keep working, and have nothing to skip.
pub const SKIPPABLE_PHASES: &[&str] = &["http_ratelimit", "http_request_firewall_managed", "http_request_sbfm"];

/// `action_parameters` of a rule. Unknown parameters are refused rather than dropped: a `skip` of something
/// Portcullis does not know would otherwise silently skip nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionParameters {
    /// Custom response of a `block` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<BlockResponse>,
    /// `skip`: `"current"` skips the remaining rules of this ruleset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
    /// `skip`: later phases to skip for the request, from [`SKIPPABLE_PHASES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

/// One rule, as in Cloudflare's rulesets API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Optional identifier; must be unique within the ruleset when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The Rules language expression.
    pub expression: String,
    /// What to do on a match.
    pub action: Action,
    /// Action parameters (`block`'s custom response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_parameters: Option<ActionParameters>,
    /// Disabled rules are ignored. Defaults to `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Rate-limiting parameters: required in rate-limiting rulesets, refused in custom rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimit>,
}

/// An ordered list of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// The rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// Why a rule of a ruleset is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleProblem {
    /// The expression does not compile.
    #[error("invalid expression: {0}")]
    Expression(CompileError),
    /// The custom response is invalid.
    #[error("invalid custom response: {0}")]
    Response(String),
    /// `ruleset` or `phases` is invalid.
    #[error("invalid action_parameters: {0}")]
    Parameters(String),
    /// Two rules share an id.
    #[error("duplicate rule id \"{0}\"")]
    DuplicateId(String),
    /// The rate-limiting parameters are missing, misplaced or invalid.
    #[error("invalid ratelimit: {0}")]
    RateLimit(String),
}

/// A ruleset failed to compile: which rule and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {} ({}): {problem}", .index + 1, .id.as_deref().map_or_else(|| "no id".to_owned(), |id| format!("id \"{id}\"")))]
pub struct RulesetError {
    /// 0-based position of the rule.
    pub index: usize,
    /// The rule's id, if it has one.
    pub id: Option<String>,
    /// What is wrong.
    pub problem: RuleProblem,
}

/// A compiled rule.
#[derive(Debug)]
pub struct CompiledRule {
    rule: Rule,
    program: Program,
    ratelimit: Option<CompiledRateLimit>,
    /// A `skip` that ends the ruleset's evaluation.
    skips_ruleset: bool,
    /// A `skip` of the `http_ratelimit` phase.
    skips_ratelimit: bool,
}

impl CompiledRule {
    /// The rule as written.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Its compiled expression.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Its action.
    pub fn action(&self) -> Action {
        self.rule.action
    }

    /// The custom block response, if any.
    pub fn response(&self) -> Option<&BlockResponse> {
        self.rule.action_parameters.as_ref().and_then(|p| p.response.as_ref())
    }

    /// Its rate-limiting parameters (rules of a rate-limiting ruleset only).
    pub fn ratelimit(&self) -> Option<&CompiledRateLimit> {
        self.ratelimit.as_ref()
    }

    /// Whether it ends evaluation when it matches: `block`, and a `skip` of the current ruleset.
    fn is_terminal(&self) -> bool {
        match self.rule.action {
            Action::Block => true,
            Action::Skip => self.skips_ruleset,
            Action::Log => false,
        }
    }
}

/// The result of evaluating a ruleset for one request.
#[derive(Debug, Default)]
pub struct Verdict<'r> {
    /// The first matching `block` rule or `skip` of the ruleset, which ended evaluation.
    pub terminal: Option<&'r CompiledRule>,
    /// Matching `log` rules before it, in order.
    pub logged: Vec<&'r CompiledRule>,
    /// The first matching `skip` that skips only phases, before the terminal rule if any.
    pub phase_skip: Option<&'r CompiledRule>,
    /// A matching `skip` named the `http_ratelimit` phase: the request is not rate limited.
    pub skip_ratelimit: bool,
}

impl<'r> Verdict<'r> {
    fn matched(&mut self, rule: &'r CompiledRule) -> bool {
        if rule.skips_ratelimit {
            self.skip_ratelimit = true;
        }
        if rule.is_terminal() {
            self.terminal = Some(rule);
            return true;
        }
        match rule.action() {
            Action::Log => self.logged.push(rule),
            Action::Skip => {
                self.phase_skip.get_or_insert(rule);
            }
            Action::Block => {}
        }
        false
    }

    /// Whether the request is blocked.
    pub fn is_blocked(&self) -> bool {
        self.terminal.is_some_and(|r| r.action() == Action::Block)
    }
}

/// A compiled, immutable ruleset. `Send + Sync`: build once, share (e.g. in an `Arc`) across
/// all connections.
#[derive(Debug)]
pub struct CompiledRuleset {
    rules: Vec<CompiledRule>,
    /// The distinct accessors that enabled rules' required literals read, and per accessor the
    /// rules (ascending positions) each literal selects.
    index: Vec<(Accessor, ByLiteral)>,
    /// Enabled rules that require no literal; ascending rule positions.
    unindexed: Vec<u32>,
    reads: FieldSet,
}

/// Rule positions (ascending) by the literal they require.
/// Fx rather than SipHash: the keys are the rules' literals, never a client's, so flooding
/// resistance buys nothing, and the lookup runs once per request.
type ByLiteral = FxHashMap<Vec<u8>, Vec<u32>>;

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledRuleset>();
    assert_send_sync::<Program>();
};

/// Checks a rule's `ruleset` and `phases` parameters; returns whether it skips the ruleset and whether it skips
/// rate limiting.
fn skip_parameters(rule: &Rule) -> Result<(bool, bool), String> {
    let (ruleset, phases) = match &rule.action_parameters {
        Some(p) => (p.ruleset.as_deref(), p.phases.as_deref()),
        None => (None, None),
    };
    if rule.action != Action::Skip {
        if ruleset.is_some() || phases.is_some() {
            return Err("ruleset and phases are parameters of skip rules only".into());
        }
        return Ok((false, false));
    }
    if let Some(other) = ruleset.filter(|r| *r != "current") {
        return Err(format!("ruleset must be \"current\", found \"{other}\""));
    }
    let mut skips_ratelimit = false;
    if let Some(phases) = phases {
        if phases.is_empty() {
            return Err("phases is empty: name at least one, e.g. [\"http_ratelimit\"]".into());
        }
        for phase in phases {
            if !SKIPPABLE_PHASES.contains(&phase.as_str()) {
                return Err(format!(
                    "phases: \"{phase}\" cannot be skipped; the phases are {}",
                    SKIPPABLE_PHASES.join(", ")
                ));
            }
            skips_ratelimit |= phase == "http_ratelimit";
        }
    }
    // A skip without parameters (accepted by earlier versions) skips the rest of the ruleset.
    let skips_ruleset = ruleset.is_some() || phases.is_none();
    Ok((skips_ruleset, skips_ratelimit))
}

fn validate_response(rule: &Rule) -> Result<(), String> {
    let Some(resp) = rule.action_parameters.as_ref().and_then(|p| p.response.as_ref()) else {
        return Ok(());
    };
    if rule.action != Action::Block {
        return Err("only block rules can have a custom response".into());
    }
    if !(400..=499).contains(&resp.status_code) {
        return Err(format!(
            "status_code must be between 400 and 499, found {}",
            resp.status_code
        ));
    }
    if !RESPONSE_CONTENT_TYPES.contains(&resp.content_type.as_str()) {
        return Err(format!(
            "content_type must be one of {}, found \"{}\"",
            RESPONSE_CONTENT_TYPES.join(", "),
            resp.content_type
        ));
    }
    if resp.content.len() > MAX_RESPONSE_BYTES {
        return Err(format!(
            "content is {} bytes, the limit is {MAX_RESPONSE_BYTES} bytes",
            resp.content.len()
        ));
    }
    Ok(())
}

impl CompiledRuleset {
    /// Compiles and validates every rule (disabled ones too) of a custom-rules ruleset
    /// (`http_request_firewall_custom`), reporting the first problem.
    pub fn compile(ruleset: &Ruleset) -> Result<CompiledRuleset, RulesetError> {
        CompiledRuleset::compile_phase(ruleset, false, &Lists::new(), true)
    }

    /// As [`CompiledRuleset::compile`] (or, with `ratelimit_phase`, [`CompiledRuleset::compile_ratelimit`]),
    /// with the named lists that expressions may reference as `$name`.
    pub fn compile_with(
        ruleset: &Ruleset,
        ratelimit_phase: bool,
        lists: &Lists,
    ) -> Result<CompiledRuleset, RulesetError> {
        CompiledRuleset::compile_phase(ruleset, ratelimit_phase, lists, true)
    }

    /// As [`CompiledRuleset::compile_with`], for rules an earlier version accepted and stored: the checks that
    /// refuse only comparisons that can never hold are skipped, so that adding such a check cannot stop an
    /// upgraded edge from building its configuration. Writes go through [`CompiledRuleset::compile_with`].
    pub fn compile_stored(
        ruleset: &Ruleset,
        ratelimit_phase: bool,
        lists: &Lists,
    ) -> Result<CompiledRuleset, RulesetError> {
        CompiledRuleset::compile_phase(ruleset, ratelimit_phase, lists, false)
    }

    /// Compiles a rate-limiting ruleset (`http_ratelimit`): every rule needs `ratelimit` and the
    /// action `block` or `log`. Evaluation is the caller's: iterate [`CompiledRuleset::rules`],
    /// evaluate each enabled rule's expression and count the matches per characteristic.
    pub fn compile_ratelimit(ruleset: &Ruleset) -> Result<CompiledRuleset, RulesetError> {
        CompiledRuleset::compile_phase(ruleset, true, &Lists::new(), true)
    }

    fn compile_phase(
        ruleset: &Ruleset,
        ratelimit_phase: bool,
        lists: &Lists,
        strict: bool,
    ) -> Result<CompiledRuleset, RulesetError> {
        let mut rules = Vec::with_capacity(ruleset.rules.len());
        let mut ids = HashSet::new();
        let mut literal_index: Vec<(Accessor, ByLiteral)> = Vec::new();
        let mut unindexed = Vec::new();
        let mut reads = FieldSet::new();
        for (index, rule) in ruleset.rules.iter().enumerate() {
            let fail = |problem| RulesetError {
                index,
                id: rule.id.clone(),
                problem,
            };
            if let Some(id) = &rule.id
                && !ids.insert(id.as_str())
            {
                return Err(fail(RuleProblem::DuplicateId(id.clone())));
            }
            let program =
                compile_opts(&rule.expression, lists, strict).map_err(|e| fail(RuleProblem::Expression(e)))?;
            validate_response(rule).map_err(|e| fail(RuleProblem::Response(e)))?;
            let (skips_ruleset, skips_ratelimit) =
                skip_parameters(rule).map_err(|e| fail(RuleProblem::Parameters(e)))?;
            let ratelimit = match (&rule.ratelimit, ratelimit_phase) {
                (Some(rl), true) => {
                    if rule.action == Action::Skip {
                        return Err(fail(RuleProblem::RateLimit(
                            "a rate-limiting rule's action must be block or log".into(),
                        )));
                    }
                    Some(rl.compile().map_err(|e| fail(RuleProblem::RateLimit(e)))?)
                }
                (None, true) => {
                    return Err(fail(RuleProblem::RateLimit(
                        "a rate-limiting rule needs ratelimit (characteristics, period, requests_per_period)".into(),
                    )));
                }
                (Some(_), false) => {
                    return Err(fail(RuleProblem::RateLimit(
                        "only rules of the http_ratelimit phase have ratelimit".into(),
                    )));
                }
                (None, false) => None,
            };
            let pos = u32::try_from(index).map_err(|_| fail(RuleProblem::Response("too many rules".into())))?;
            if rule.enabled {
                reads.extend(program.fields());
                for c in ratelimit.iter().flat_map(|r| &r.characteristics) {
                    match c {
                        Characteristic::Field(id) => reads.insert(*id),
                        Characteristic::Header(_) | Characteristic::Colo => {}
                    }
                }
                match program.required_atoms() {
                    Some(atoms) => {
                        for (accessor, literal) in atoms {
                            let slot = match literal_index.iter().position(|(a, _)| *a == accessor) {
                                Some(i) => i,
                                None => {
                                    literal_index.push((accessor, FxHashMap::default()));
                                    literal_index.len() - 1
                                }
                            };
                            let list = literal_index[slot].1.entry(literal).or_default();
                            // One rule may require the same literal twice (`a eq "x" or a eq "x"`).
                            if list.last() != Some(&pos) {
                                list.push(pos);
                            }
                        }
                    }
                    None => unindexed.push(pos),
                }
            }
            rules.push(CompiledRule {
                rule: rule.clone(),
                program,
                ratelimit,
                skips_ruleset,
                skips_ratelimit,
            });
        }
        Ok(CompiledRuleset {
            rules,
            index: literal_index,
            unindexed,
            reads,
        })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Every field the enabled rules read; the proxy needs to fill only these.
    pub fn fields(&self) -> &FieldSet {
        &self.reads
    }

    /// Evaluates the enabled rules in order until a `block` rule or a `skip` of the ruleset matches.
    pub fn eval(&self, ctx: &Context) -> Verdict<'_> {
        // The rules the request's values select; most requests select none or a few.
        let selected: std::borrow::Cow<'_, [u32]> = match self.index.as_slice() {
            [(accessor, by_literal)] => std::borrow::Cow::Borrowed(
                accessor
                    .read(ctx)
                    .and_then(|v| by_literal.get(v))
                    .map_or(&[], Vec::as_slice),
            ),
            several => {
                let mut all: Vec<u32> = Vec::new();
                for (accessor, by_literal) in several {
                    if let Some(list) = accessor.read(ctx).and_then(|v| by_literal.get(v)) {
                        all.extend_from_slice(list);
                    }
                }
                // Each list is ascending, but a rule can be selected through several accessors.
                all.sort_unstable();
                all.dedup();
                std::borrow::Cow::Owned(all)
            }
        };
        let mut verdict = Verdict::default();
        // Merge the two ascending lists so rules run in ruleset order.
        let (mut i, mut j) = (0, 0);
        loop {
            let next = match (selected.get(i), self.unindexed.get(j)) {
                (Some(a), Some(b)) if a < b => {
                    i += 1;
                    *a
                }
                (Some(a), None) => {
                    i += 1;
                    *a
                }
                (_, Some(b)) => {
                    j += 1;
                    *b
                }
                (None, None) => break,
            };
            let Some(rule) = self.rules.get(next as usize) else {
                continue;
            };
            if !rule.program.eval(ctx) {
                continue;
            }
            if verdict.matched(rule) {
                break;
            }
        }
        verdict
    }

    /// Reference evaluation without the index (every enabled rule in order); for tests.
    #[doc(hidden)]
    pub fn eval_linear(&self, ctx: &Context) -> Verdict<'_> {
        let mut verdict = Verdict::default();
        for rule in self.rules.iter().filter(|r| r.rule.enabled) {
            if !rule.program.eval(ctx) {
                continue;
            }
            if verdict.matched(rule) {
                break;
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests;
