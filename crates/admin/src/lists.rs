//! Named lists: Cloudflare's Lists API (`/accounts/{account_id}/rules/lists`) for IP lists, which rule expressions
//! reference as `ip.src in $name`.
//!
//! Item changes are Cloudflare's asynchronous bulk operations: the call answers with an `operation_id` that clients
//! poll at `…/rules/lists/bulk_operations/{operation_id}`. Here the change is done (or refused with an error) before
//! the answer, so the operation a client polls is already `completed`, and the edge serves the new items as soon as
//! its snapshot is rebuilt. Only the `ip` kind is accepted: hostname, ASN and redirect lists feed Cloudflare features
//! that Portcullis does not have.

use crate::api::Path;
use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use portcullis_rules::lists::{check_list_name, parse_ip_item};
use portcullis_store::{Actor, List, ListItem, ListOperation, NewListItem};

use crate::AdminState;
use crate::api::{ApiError, ApiJson, ApiJsonOrEmpty, ApiQuery, ApiResult, ok, ok_all};
use crate::certs::check_account;
use crate::time_fmt::rfc3339;
use crate::zones::IdOnly;

/// A list as Cloudflare shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub num_items: i64,
    pub num_referencing_filters: i64,
    pub created_on: String,
    pub modified_on: String,
}

fn list_view(list: List) -> ListView {
    ListView {
        id: list.id,
        name: list.name,
        description: list.description,
        kind: list.kind,
        num_items: list.num_items,
        num_referencing_filters: list.num_referencing_filters,
        created_on: rfc3339(list.created_on),
        modified_on: rfc3339(list.modified_on),
    }
}

/// An IP list item as Cloudflare shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemView {
    pub id: String,
    pub ip: String,
    pub comment: String,
    pub created_on: String,
    pub modified_on: String,
}

fn item_view(item: ListItem) -> ItemView {
    ItemView {
        id: item.id,
        ip: item.value,
        comment: item.comment,
        created_on: rfc3339(item.created_on),
        modified_on: rfc3339(item.modified_on),
    }
}

/// `POST …/rules/lists` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateList {
    /// Lowercase letters, digits and underscores, at most 50; rules write it as `$name`.
    pub name: String,
    /// `ip`, the one kind Portcullis has.
    pub kind: String,
    #[serde(default)]
    pub description: String,
}

/// `PUT …/rules/lists/{list_id}` body: only the description changes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateList {
    #[serde(default)]
    pub description: String,
}

/// One item to add: an IP address or CIDR range, with an optional comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    pub ip: Option<String>,
    #[serde(default)]
    pub comment: String,
    /// Other kinds' item fields, accepted only to be refused by name.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub hostname: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub asn: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub redirect: Option<serde_json::Value>,
}

/// `DELETE …/items` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteItems {
    #[serde(default)]
    pub items: Vec<ItemId>,
}

/// An item, by id.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemId {
    pub id: String,
}

/// What an item change returns: the operation to poll.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationId {
    pub operation_id: String,
}

/// A bulk operation's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    pub id: String,
    /// `completed` (or `failed`, with `error`).
    pub status: String,
    pub completed: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET …/items` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ItemsQuery {
    /// The `result_info.cursors.after` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 100).
    pub per_page: Option<u32>,
    /// Keeps items whose address or comment contains this text.
    pub search: Option<String>,
}

/// Create a list.
#[utoipa::path(post, path = "/accounts/{account_id}/rules/lists", tag = "lists",
    request_body = CreateList,
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The new, empty list", body = ListView)))]
pub async fn create_list(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path(account_id): Path<String>,
    ApiJson(body): ApiJson<CreateList>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    check_list_name(&body.name).map_err(ApiError::invalid)?;
    if body.kind != "ip" {
        return Err(ApiError::invalid(format!(
            "kind {:?} is not supported: Portcullis has IP lists (\"kind\": \"ip\") only",
            body.kind
        )));
    }
    let list = state
        .store
        .create_list(&body.name, &body.kind, &body.description, &actor)
        .await?;
    Ok(ok(list_view(list)))
}

/// List the lists.
#[utoipa::path(get, path = "/accounts/{account_id}/rules/lists", tag = "lists",
    params(("account_id" = String, Path, description = "Account id")),
    responses((status = 200, description = "Every list", body = [ListView])))]
pub async fn list_lists(State(state): State<AdminState>, Path(account_id): Path<String>) -> ApiResult {
    check_account(&state, &account_id).await?;
    let lists: Vec<ListView> = state.store.lists().await?.into_iter().map(list_view).collect();
    Ok(ok_all(lists))
}

/// Get a list.
#[utoipa::path(get, path = "/accounts/{account_id}/rules/lists/{list_id}", tag = "lists",
    params(("account_id" = String, Path, description = "Account id"), ("list_id" = String, Path, description = "List id")),
    responses((status = 200, description = "The list", body = ListView)))]
pub async fn get_list(State(state): State<AdminState>, Path((account_id, id)): Path<(String, String)>) -> ApiResult {
    check_account(&state, &account_id).await?;
    Ok(ok(list_view(state.store.list(&id).await?)))
}

/// Change a list's description.
#[utoipa::path(put, path = "/accounts/{account_id}/rules/lists/{list_id}", tag = "lists",
    request_body = UpdateList,
    params(("account_id" = String, Path, description = "Account id"), ("list_id" = String, Path, description = "List id")),
    responses((status = 200, description = "The list", body = ListView)))]
pub async fn update_list(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateList>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    Ok(ok(list_view(
        state.store.update_list(&id, &body.description, &actor).await?,
    )))
}

/// Delete a list and its items; refused while a rule references it.
#[utoipa::path(delete, path = "/accounts/{account_id}/rules/lists/{list_id}", tag = "lists",
    params(("account_id" = String, Path, description = "Account id"), ("list_id" = String, Path, description = "List id")),
    responses((status = 200, description = "The deleted list's id", body = IdOnly)))]
pub async fn delete_list(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    state.store.delete_list(&id, &actor).await?;
    Ok(ok(IdOnly { id }))
}

/// A page of a list's items, with Cloudflare's cursor paging.
#[utoipa::path(get, path = "/accounts/{account_id}/rules/lists/{list_id}/items", tag = "lists",
    params(("account_id" = String, Path, description = "Account id"), ("list_id" = String, Path, description = "List id"), ItemsQuery),
    responses((status = 200, description = "A page of items; result_info.cursors.after fetches the next", body = [ItemView])))]
pub async fn list_items(
    State(state): State<AdminState>,
    Path((account_id, id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<ItemsQuery>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    let per_page = query.per_page.unwrap_or(100);
    if !(1..=portcullis_store::MAX_LIST_ITEMS_PER_PAGE).contains(&per_page) {
        return Err(ApiError::invalid(format!(
            "per_page must be 1 to {}",
            portcullis_store::MAX_LIST_ITEMS_PER_PAGE
        )));
    }
    let (items, next) = state
        .store
        .list_items(
            &id,
            query.cursor.as_deref().filter(|c| !c.is_empty()),
            per_page,
            query.search.as_deref().filter(|s| !s.is_empty()),
        )
        .await?;
    let items: Vec<ItemView> = items.into_iter().map(item_view).collect();
    let mut cursors = serde_json::Map::new();
    if let Some(after) = next {
        cursors.insert("after".to_owned(), after.into());
    }
    Ok(Json(serde_json::json!({
        "success": true,
        "errors": [],
        "messages": [],
        "result": items,
        "result_info": {"cursors": cursors},
    }))
    .into_response())
}

/// Get one item.
#[utoipa::path(get, path = "/accounts/{account_id}/rules/lists/{list_id}/items/{item_id}", tag = "lists",
    params(("account_id" = String, Path, description = "Account id"), ("list_id" = String, Path, description = "List id"),
           ("item_id" = String, Path, description = "Item id")),
    responses((status = 200, description = "The item", body = ItemView)))]
pub async fn get_item(
    State(state): State<AdminState>,
    Path((account_id, id, item_id)): Path<(String, String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    Ok(ok(item_view(state.store.list_item(&id, &item_id).await?)))
}

/// Add items (an address already in the list gets the new comment).
#[utoipa::path(post, path = "/accounts/{account_id}/rules/lists/{list_id}/items", tag = "lists",
    request_body = [ItemInput],
    params(("account_id" = String, Path, description = "Account id"), ("list_id" = String, Path, description = "List id")),
    responses((status = 200, description = "The finished operation's id", body = OperationId)))]
pub async fn add_items(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Vec<ItemInput>>,
) -> ApiResult {
    write_items(&state, &actor, &account_id, &id, body, false).await
}

/// Replace all items.
#[utoipa::path(put, path = "/accounts/{account_id}/rules/lists/{list_id}/items", tag = "lists",
    request_body = [ItemInput],
    params(("account_id" = String, Path, description = "Account id"), ("list_id" = String, Path, description = "List id")),
    responses((status = 200, description = "The finished operation's id", body = OperationId)))]
pub async fn replace_items(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Vec<ItemInput>>,
) -> ApiResult {
    write_items(&state, &actor, &account_id, &id, body, true).await
}

/// Delete items by id.
#[utoipa::path(delete, path = "/accounts/{account_id}/rules/lists/{list_id}/items", tag = "lists",
    request_body = DeleteItems,
    params(("account_id" = String, Path, description = "Account id"), ("list_id" = String, Path, description = "List id")),
    responses((status = 200, description = "The finished operation's id", body = OperationId)))]
pub async fn delete_items(
    State(state): State<AdminState>,
    Extension(actor): Extension<Actor>,
    Path((account_id, id)): Path<(String, String)>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<DeleteItems>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    if body.items.is_empty() {
        return Err(ApiError::invalid(
            "items must name at least one item: {\"items\": [{\"id\": \"…\"}]}",
        ));
    }
    let ids: Vec<String> = body.items.into_iter().map(|i| i.id).collect();
    let op = state.store.delete_list_items(&id, &ids, &actor).await?;
    Ok(ok(OperationId { operation_id: op.id }))
}

/// A bulk operation's state.
#[utoipa::path(get, path = "/accounts/{account_id}/rules/lists/bulk_operations/{operation_id}", tag = "lists",
    params(("account_id" = String, Path, description = "Account id"), ("operation_id" = String, Path, description = "Operation id")),
    responses((status = 200, description = "The operation", body = OperationView)))]
pub async fn get_operation(
    State(state): State<AdminState>,
    Path((account_id, id)): Path<(String, String)>,
) -> ApiResult {
    check_account(&state, &account_id).await?;
    Ok(ok(operation_view(state.store.list_operation(&id).await?)))
}

fn operation_view(op: ListOperation) -> OperationView {
    OperationView {
        id: op.id,
        status: op.status,
        completed: rfc3339(op.completed_on),
        error: op.error,
    }
}

async fn write_items(
    state: &AdminState,
    actor: &Actor,
    account_id: &str,
    list_id: &str,
    body: Vec<ItemInput>,
    replace: bool,
) -> ApiResult {
    check_account(state, account_id).await?;
    let items = body
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |e: String| ApiError::invalid(format!("item {i}: {e}"));
            if item.hostname.is_some() || item.asn.is_some() || item.redirect.is_some() {
                return Err(at(
                    "only IP items (\"ip\") are supported: Portcullis has IP lists only".into()
                ));
            }
            let ip = item.ip.ok_or_else(|| at("\"ip\" is required".into()))?;
            let (value, _) = parse_ip_item(&ip).map_err(at)?;
            Ok(NewListItem {
                value,
                comment: item.comment,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let op = state.store.write_list_items(list_id, items, replace, actor).await?;
    Ok(ok(OperationId { operation_id: op.id }))
}
