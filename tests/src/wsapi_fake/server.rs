//! The fake WSAPI's HTTP(S) server and request handling (see the module
//! comment of `wsapi_fake` for what it implements and where it comes from).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use super::{Logged, Shared, State, Task, Vlun, MAX_NAME, VIRTUAL_COPY};

pub const SESSION_HEADER: &str = "x-hp3par-wsapi-sessionkey";

/// A running fake; stops when dropped.
pub struct FakeWsapi {
    shared: Shared,
    addr: SocketAddr,
    https: bool,
    task: tokio::task::JoinHandle<()>,
}

/// Certificate chain and key (PEM) for the HTTPS fake.
pub struct TlsFiles {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Drop for FakeWsapi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWsapi {
    /// Plain HTTP on 127.0.0.1 (free port), accepting `user` / `password`.
    pub async fn start_http(user: &str, password: &str) -> std::io::Result<FakeWsapi> {
        let (shared, listener, app) = setup(user, password).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeWsapi {
            shared,
            addr,
            https: false,
            task,
        })
    }

    /// HTTPS on 127.0.0.1 (free port) with the given certificate.
    pub async fn start_https(user: &str, password: &str, tls: &TlsFiles) -> std::io::Result<FakeWsapi> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
            .map_err(|e| bad(format!("key PEM: {e}")))?;
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| bad(e.to_string()))?;
        let (shared, listener, app) = setup(user, password).await?;
        let addr = listener.local_addr()?;
        let tls_listener = TlsListener {
            tcp: listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(tls_listener, app).await;
        });
        Ok(FakeWsapi {
            shared,
            addr,
            https: true,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` or `https://localhost:PORT` (no `/api/v1`).
    pub fn base_url(&self) -> String {
        if self.https {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://127.0.0.1:{}", self.addr.port())
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

async fn setup(user: &str, password: &str) -> std::io::Result<(Shared, TcpListener, Router)> {
    let shared = Shared::default();
    {
        let mut st = shared.lock();
        st.user = user.to_string();
        st.password = password.to_string();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let app = Router::new().fallback(handle).with_state(shared.clone());
    Ok((shared, listener, app))
}

/// Accepts TCP connections and completes the TLS handshake (failed
/// handshakes are dropped; the next connection is accepted).
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let hs = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await;
            if let Ok(Ok(tls)) = hs {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A WSAPI error: `{"code": n, "desc": "..."}` with an HTTP status.
fn wsapi_err(status: StatusCode, code: u32, desc: &str) -> (StatusCode, Value) {
    (status, json!({ "code": code, "desc": desc }))
}

/// An error the reference names but gives no number for: code 0, the name
/// first in `desc` (module comment).
fn named_err(status: StatusCode, name: &str, desc: &str) -> (StatusCode, Value) {
    wsapi_err(status, 0, &format!("{name}: {desc}"))
}

async fn handle(
    AxState(shared): AxState<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let key = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body_text = String::from_utf8_lossy(&body).to_string();
    let mut st = shared.lock();
    let mut location = None;
    let (status, reply) = if st.inject_503 > 0 {
        st.inject_503 -= 1;
        wsapi_err(
            StatusCode::SERVICE_UNAVAILABLE,
            0,
            "service unavailable (injected by the fake)",
        )
    } else {
        route(
            &mut st,
            &method,
            uri.path(),
            &query,
            key.as_deref(),
            &body,
            &mut location,
        )
    };
    st.log.push(Logged {
        method: method.to_string(),
        uri: uri.to_string(),
        session_key: key,
        body: body_text,
        status: status.as_u16(),
    });
    drop(st);
    let mut resp = if reply.is_null() {
        status.into_response()
    } else {
        (status, axum::Json(reply)).into_response()
    };
    if let Some(l) = location.and_then(|l| axum::http::HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(axum::http::header::LOCATION, l);
    }
    resp
}

fn route(
    st: &mut State,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    key: Option<&str>,
    body: &[u8],
    location: &mut Option<String>,
) -> (StatusCode, Value) {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return wsapi_err(
            StatusCode::NOT_FOUND,
            0,
            "not a WSAPI path (expected /api/v1/...)",
        );
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    if method == Method::POST && parts == ["credentials"] {
        return login(st, body);
    }
    // Everything else needs a valid session key.
    match key {
        None => return wsapi_err(StatusCode::UNAUTHORIZED, 6, "invalid session key"),
        Some(k) if !st.sessions.contains(k) => {
            return wsapi_err(StatusCode::FORBIDDEN, 6, "invalid session key")
        }
        Some(_) => {}
    }
    match (method.clone(), parts.as_slice()) {
        (Method::DELETE, ["credentials", k]) => {
            if st.sessions.remove(*k) {
                st.logouts += 1;
                (StatusCode::OK, Value::Null)
            } else {
                wsapi_err(StatusCode::FORBIDDEN, 6, "invalid session key")
            }
        }
        (Method::GET, ["volumes"]) => list_volumes(st, query),
        (Method::GET, ["volumes", name]) => match st.volumes.get(*name) {
            Some(v) => (StatusCode::OK, volume_json(v)),
            None => non_existent_vol(name),
        },
        (Method::DELETE, ["volumes", name]) => delete_volume(st, name),
        (Method::POST, ["volumes", base]) => match parse_snapshot(body) {
            Err(e) => e,
            Ok(p) => snapshot_volume(st, base, &p),
        },
        (Method::GET, ["volumesets", set]) => match st.sets.get(*set) {
            Some(members) => (StatusCode::OK, json!({ "name": set, "setmembers": members })),
            None => non_existent_set(set),
        },
        (Method::GET, ["cpgs", name]) => match st.cpgs.get(*name) {
            Some(c) => (
                StatusCode::OK,
                json!({
                    "name": name,
                    "SDUsage": { "usedMiB": c.used_mib, "totalMiB": c.used_mib },
                    "SDGrowth": { "limitMiB": c.limit_mib, "warningMiB": c.warning_mib },
                }),
            ),
            None => wsapi_err(StatusCode::NOT_FOUND, 15, &format!("CPG does not exist: {name}")),
        },
        (Method::POST, ["volumesets", set]) => match parse_snapshot(body) {
            Err(e) => e,
            Ok(p) => snapshot_set(st, set, &p),
        },
        (Method::PUT, ["volumes", name]) => promote(st, name, body),
        (Method::GET, ["tasks", id]) => task(st, id),
        (Method::GET, ["vluns"]) => list_vluns(st, query),
        (Method::POST, ["vluns"]) => create_vlun(st, body, location),
        (Method::DELETE, ["vluns", spec]) => delete_vlun(st, spec),
        _ => wsapi_err(StatusCode::NOT_FOUND, 0, "the fake does not implement this call"),
    }
}

fn non_existent_vol(name: &str) -> (StatusCode, Value) {
    wsapi_err(
        StatusCode::NOT_FOUND,
        23,
        &format!("volume does not exist: {name}"),
    )
}

fn non_existent_set(name: &str) -> (StatusCode, Value) {
    wsapi_err(StatusCode::NOT_FOUND, 77, &format!("set does not exist: {name}"))
}

fn login(st: &mut State, body: &[u8]) -> (StatusCode, Value) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return wsapi_err(StatusCode::BAD_REQUEST, 12, "invalid input: body is not JSON");
    };
    let user = v.get("user").and_then(Value::as_str);
    let password = v.get("password").and_then(Value::as_str);
    if user != Some(st.user.as_str()) || password != Some(st.password.as_str()) {
        return wsapi_err(StatusCode::FORBIDDEN, 5, "invalid username or password");
    }
    st.logins += 1;
    let key = format!("0-{:016x}-{:08x}", fastrand(st), st.logins);
    st.sessions.insert(key.clone());
    (StatusCode::CREATED, json!({ "key": key }))
}

/// Not random at all, but distinct per login (keys only need to differ).
fn fastrand(st: &State) -> u64 {
    (st.logins + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ st.next_id
}

fn volume_json(v: &super::Volume) -> Value {
    let mut j = json!({
        "id": v.id,
        "name": v.name,
        "copyType": v.copy_type,
        "readOnly": v.read_only,
        "creationTimeSec": v.creation_time_sec,
    });
    if let Some(c) = &v.copy_of {
        j["copyOf"] = json!(c);
    }
    if let Some(c) = &v.snap_cpg {
        j["snapCPG"] = json!(c);
    }
    if let Some(c) = &v.comment {
        j["comment"] = json!(c);
    }
    if let Some(h) = v.expiration_hours {
        j["expirationTimeSec"] = json!(v.creation_time_sec + h * 3600);
    }
    if let Some(h) = v.retention_hours {
        j["retentionTimeSec"] = json!(v.creation_time_sec + h * 3600);
    }
    j
}

fn list_volumes(st: &State, query: &HashMap<String, String>) -> (StatusCode, Value) {
    let filter: Option<String> = match query.get("query") {
        None => None,
        Some(q) => {
            // query="copyOf EQ <base>" (the quotes are part of the value).
            let q = q.trim().trim_matches('"');
            let words: Vec<&str> = q.split_whitespace().collect();
            match words.as_slice() {
                ["copyOf", "EQ", base] => Some(base.to_string()),
                _ => {
                    return wsapi_err(
                        StatusCode::BAD_REQUEST,
                        12,
                        "invalid input: the fake understands only query=\"copyOf EQ <name>\"",
                    )
                }
            }
        }
    };
    let members: Vec<Value> = st
        .volumes
        .values()
        .filter(|v| filter.is_none() || v.copy_of == filter)
        .map(volume_json)
        .collect();
    (
        StatusCode::OK,
        json!({ "total": members.len(), "members": members }),
    )
}

fn delete_volume(st: &mut State, name: &str) -> (StatusCode, Value) {
    if !st.volumes.contains_key(name) {
        return non_existent_vol(name);
    }
    if st.volumes.values().any(|v| v.copy_of.as_deref() == Some(name)) {
        return wsapi_err(StatusCode::CONFLICT, 32, &format!("volume has a child: {name}"));
    }
    if st.vluns.iter().any(|v| v.volume_name == name) {
        return wsapi_err(
            StatusCode::CONFLICT,
            26,
            &format!("the volume is exported (VLUN still exported): {name}"),
        );
    }
    st.volumes.remove(name);
    (StatusCode::OK, Value::Null)
}

struct SnapParams {
    name: String,
    read_only: bool,
    comment: Option<String>,
    expiration_hours: Option<u64>,
    retention_hours: Option<u64>,
}

fn parse_snapshot(body: &[u8]) -> Result<SnapParams, (StatusCode, Value)> {
    let bad = |desc: &str| wsapi_err(StatusCode::BAD_REQUEST, 12, desc);
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("invalid input: body is not JSON"))?;
    if v.get("action").and_then(Value::as_str) != Some("createSnapshot") {
        return Err(bad(
            "invalid input: the fake implements only action createSnapshot",
        ));
    }
    let p = v
        .get("parameters")
        .ok_or_else(|| bad("invalid input: missing parameters"))?;
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("invalid input: missing name"))?
        .to_string();
    let hours = |k: &str| -> Result<Option<u64>, (StatusCode, Value)> {
        match p.get(k) {
            None => Ok(None),
            Some(h) => match h.as_u64() {
                Some(h) if (1..=43_800).contains(&h) => Ok(Some(h)),
                _ => Err(bad(&format!("invalid input: {k} must be 1 to 43800"))),
            },
        }
    };
    Ok(SnapParams {
        read_only: p.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
        comment: p.get("comment").and_then(Value::as_str).map(str::to_string),
        expiration_hours: hours("expirationHours")?,
        retention_hours: hours("retentionHours")?,
        name,
    })
}

fn check_new_name(st: &State, name: &str) -> Result<(), (StatusCode, Value)> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(wsapi_err(
            StatusCode::BAD_REQUEST,
            57,
            &format!("invalid input: name exceeds {MAX_NAME} characters: {name}"),
        ));
    }
    if st.volumes.contains_key(name) {
        return Err(wsapi_err(
            StatusCode::CONFLICT,
            22,
            &format!("volume exists: {name}"),
        ));
    }
    Ok(())
}

fn create_copy(st: &mut State, base: &str, name: &str, p: &SnapParams) {
    let content = st.volumes.get(base).and_then(|v| v.content.clone());
    let v = st.add_volume(name, Some(base), VIRTUAL_COPY);
    v.content = content;
    v.read_only = p.read_only;
    v.comment = p.comment.clone();
    v.expiration_hours = p.expiration_hours;
    v.retention_hours = p.retention_hours;
}

fn snapshot_volume(st: &mut State, base: &str, p: &SnapParams) -> (StatusCode, Value) {
    let Some(parent) = st.volumes.get(base) else {
        return non_existent_vol(base);
    };
    if parent.read_only && p.read_only {
        return named_err(
            StatusCode::FORBIDDEN,
            "INV_OPERATION_VV_READONLY_TO_READONLY_SNAP",
            &format!("creating a read-only copy of the read-only volume {base} is not permitted"),
        );
    }
    if let Err(e) = check_new_name(st, &p.name) {
        return e;
    }
    create_copy(st, base, &p.name, p);
    (StatusCode::CREATED, Value::Null)
}

fn snapshot_set(st: &mut State, set: &str, p: &SnapParams) -> (StatusCode, Value) {
    let Some(members) = st.sets.get(set).cloned() else {
        return non_existent_set(set);
    };
    if members.len() > 1 && !p.name.contains("@count@") {
        return wsapi_err(
            StatusCode::BAD_REQUEST,
            12,
            "invalid input: a set of several volumes needs a name pattern such as name-@count@",
        );
    }
    let names: Vec<String> = (0..members.len())
        .map(|i| p.name.replace("@count@", &i.to_string()))
        .collect();
    // All or nothing, one instant for every member.
    for n in &names {
        if let Err(e) = check_new_name(st, n) {
            return e;
        }
    }
    for base in &members {
        if !st.volumes.contains_key(base) {
            return non_existent_vol(base);
        }
    }
    for (base, n) in members.iter().zip(&names) {
        create_copy(st, base, n, p);
    }
    (StatusCode::CREATED, Value::Null)
}

/// The base volume of `name`: the root of its `copyOf` chain.
fn base_of(st: &State, name: &str) -> String {
    let mut cur = name.to_string();
    for _ in 0..64 {
        match st.volumes.get(&cur).and_then(|v| v.copy_of.clone()) {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    cur
}

/// `PUT /volumes/<copy>` with action 4, PROMOTE_VIRTUAL_COPY.
fn promote(st: &mut State, name: &str, body: &[u8]) -> (StatusCode, Value) {
    let bad = |code: u32, desc: &str| wsapi_err(StatusCode::BAD_REQUEST, code, desc);
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad(12, "invalid input: body is not JSON");
    };
    match v.get("action").map(|a| a.as_i64()) {
        None => return modify(st, name, &v),
        Some(Some(4)) => {}
        Some(Some(1..=6)) => {
            return wsapi_err(
                StatusCode::NOT_FOUND,
                0,
                "the fake implements only action 4 (PROMOTE_VIRTUAL_COPY) of PUT /volumes",
            )
        }
        Some(_) => return bad(46, "invalid input: bad enum value - action"),
    }
    for k in v
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if !["action", "online", "priority", "allowRemoteCopyParent"].contains(&k.as_str()) {
            return bad(12, &format!("invalid input: unknown member {k}"));
        }
    }
    let online = match v.get("online") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad(39, "invalid input: wrong type for online"),
    };
    if let Some(p) = v.get("priority") {
        if online {
            return named_err(
                StatusCode::CONFLICT,
                "INV_OPERATION_PARAM_CONFLICT",
                "parameters cannot be present at the same time (priority does not apply to online promote)",
            );
        }
        if !matches!(p.as_i64(), Some(1..=3)) {
            return bad(46, "invalid input: bad enum value - priority");
        }
    }
    let Some(copy) = st.volumes.get(name) else {
        return non_existent_vol(name);
    };
    if copy.copy_of.is_none() {
        return named_err(
            StatusCode::CONFLICT,
            "INV_OPERATION_VV_BASE_VOLUME",
            &format!("the volume is a base volume: {name}"),
        );
    }
    let content = copy.content.clone();
    let base = base_of(st, name);
    if !online && st.vluns.iter().any(|l| l.volume_name == base) {
        return named_err(
            StatusCode::FORBIDDEN,
            "INV_OPERATION_VV_EXPORTED",
            &format!("the base volume {base} is exported: promote it online or unexport it"),
        );
    }
    if let Some(b) = st.volumes.get_mut(&base) {
        b.content = content;
    }
    st.next_task += 1;
    let id = st.next_task;
    let polls_left = st.task_polls;
    st.tasks.insert(
        id,
        Task {
            name: format!("promotesv {name}"),
            polls_left,
        },
    );
    (
        StatusCode::OK,
        json!({ "taskid": id, "links": [{ "href": format!("/api/v1/volumes/{name}"), "rel": "self" }] }),
    )
}

/// `PUT /volumes/<name>` without an action ("Modifying a Volume"): only
/// `comment` (up to 511 characters) is modelled.
fn modify(st: &mut State, name: &str, v: &Value) -> (StatusCode, Value) {
    let Some(o) = v.as_object() else {
        return wsapi_err(
            StatusCode::BAD_REQUEST,
            12,
            "invalid input: body is not a JSON object",
        );
    };
    if o.keys().any(|k| k != "comment") || o.is_empty() {
        return wsapi_err(
            StatusCode::NOT_FOUND,
            0,
            "the fake implements only comment of a volume modification",
        );
    }
    let Some(c) = o.get("comment").and_then(Value::as_str) else {
        return wsapi_err(
            StatusCode::BAD_REQUEST,
            39,
            "invalid input: wrong type for comment",
        );
    };
    if c.len() > 511 {
        return wsapi_err(
            StatusCode::BAD_REQUEST,
            57,
            "invalid input: comment exceeds 511 characters",
        );
    }
    let Some(vol) = st.volumes.get_mut(name) else {
        return non_existent_vol(name);
    };
    vol.comment = Some(c.to_string());
    (StatusCode::OK, Value::Null)
}

/// `GET /tasks/<id>`.
fn task(st: &mut State, id: &str) -> (StatusCode, Value) {
    let Ok(id) = id.parse::<i64>() else {
        return wsapi_err(
            StatusCode::BAD_REQUEST,
            39,
            "invalid input: task ID is not an integer",
        );
    };
    if id <= 0 {
        return wsapi_err(
            StatusCode::BAD_REQUEST,
            115,
            "invalid input: task ID must be positive",
        );
    }
    let Some(t) = st.tasks.get_mut(&(id as u64)) else {
        return wsapi_err(StatusCode::NOT_FOUND, 145, &format!("task does not exist: {id}"));
    };
    let status = if t.polls_left > 0 {
        t.polls_left -= 1;
        2
    } else {
        1
    };
    (
        StatusCode::OK,
        json!({
            "id": id,
            "type": 4,
            "name": t.name,
            "status": status,
            "completedPhases": if status == 1 { 1 } else { 0 },
            "totalPhases": 1,
            "priority": 2,
            "user": st.user,
            "detailedStatus": if status == 1 { "promote done" } else { "promote running" },
        }),
    )
}

fn vlun_json(v: &Vlun) -> Value {
    json!({ "volumeName": v.volume_name, "lun": v.lun, "hostname": v.hostname, "active": true, "type": 3 })
}

/// `GET /vluns[?query="volumeName EQ <v>"]`.
fn list_vluns(st: &State, query: &HashMap<String, String>) -> (StatusCode, Value) {
    let filter = match query.get("query") {
        None => None,
        Some(q) => {
            let words: Vec<&str> = q.trim().trim_matches('"').split_whitespace().collect();
            match words.as_slice() {
                ["volumeName", "EQ", v] => Some(v.to_string()),
                _ => {
                    return wsapi_err(
                        StatusCode::BAD_REQUEST,
                        12,
                        "invalid input: the fake understands only query=\"volumeName EQ <name>\"",
                    )
                }
            }
        }
    };
    let members: Vec<Value> = st
        .vluns
        .iter()
        .filter(|v| filter.as_deref().is_none_or(|f| f == v.volume_name))
        .map(vlun_json)
        .collect();
    (
        StatusCode::OK,
        json!({ "total": members.len(), "members": members }),
    )
}

/// Highest LUN the array accepts.
const MAX_LUN: u64 = 16_384;

/// `POST /vluns`.
fn create_vlun(st: &mut State, body: &[u8], location: &mut Option<String>) -> (StatusCode, Value) {
    let bad = |code: u32, desc: &str| wsapi_err(StatusCode::BAD_REQUEST, code, desc);
    let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(body) else {
        return bad(12, "invalid input: body is not a JSON object");
    };
    for k in v.keys() {
        if ![
            "volumeName",
            "lun",
            "hostname",
            "portPos",
            "noVcn",
            "overrideLowerPriority",
            "autoLun",
            "maxAutoLun",
        ]
        .contains(&k.as_str())
        {
            return bad(12, &format!("invalid input: unknown member {k}"));
        }
    }
    if v.contains_key("portPos") {
        return bad(
            12,
            "invalid input: port VLUNs (portPos) are not modelled by the fake",
        );
    }
    let Some(vol) = v.get("volumeName").and_then(Value::as_str) else {
        return bad(40, "invalid input: missing required volumeName");
    };
    let Some(host) = v.get("hostname").and_then(Value::as_str) else {
        return bad(40, "invalid input: missing hostname (and portPos)");
    };
    let auto = v.get("autoLun").and_then(Value::as_bool).unwrap_or(false);
    let lun = match v.get("lun") {
        None if auto => 0,
        None => return bad(12, "invalid input: missing LUN"),
        Some(l) => match l.as_u64() {
            Some(l) if l > MAX_LUN => return bad(28, "LUN is greater than 16384"),
            Some(l) => l,
            None => return bad(39, "invalid input: wrong type for lun"),
        },
    };
    if !st.volumes.contains_key(vol) {
        return non_existent_vol(vol);
    }
    if !st.hosts.contains(host) {
        return wsapi_err(StatusCode::NOT_FOUND, 17, &format!("host does not exist: {host}"));
    }
    let used = |st: &State, l: u64| {
        st.vluns
            .iter()
            .any(|x| x.hostname == host && u64::from(x.lun) == l)
    };
    let lun = if auto {
        let max = match v.get("maxAutoLun").and_then(Value::as_u64).unwrap_or(0) {
            0 => MAX_LUN,
            m => m.min(MAX_LUN),
        };
        match (lun..=max).find(|l| !used(st, *l)) {
            Some(l) => l,
            None => {
                return named_err(
                    StatusCode::CONFLICT,
                    "AUTO_LUN_ID_UNAVAILABLE",
                    "LUN ID cannot be assigned within the specified range",
                )
            }
        }
    } else if used(st, lun) {
        return wsapi_err(
            StatusCode::CONFLICT,
            18,
            &format!("LUN {lun} already exists on host {host}"),
        );
    } else {
        lun
    };
    let vlun = Vlun {
        volume_name: vol.to_string(),
        lun: lun as u32,
        hostname: host.to_string(),
    };
    *location = Some(format!("/api/v1/vluns/{vol},{lun},{host}"));
    st.vluns.push(vlun);
    (StatusCode::CREATED, Value::Null)
}

/// `DELETE /vluns/<volume>,<lun>,<host>`.
fn delete_vlun(st: &mut State, spec: &str) -> (StatusCode, Value) {
    let parts: Vec<&str> = spec.split(',').collect();
    let (vol, lun, host) = match parts.as_slice() {
        [vol, lun, host] => (*vol, *lun, *host),
        [_, _, _, _] => {
            return wsapi_err(
                StatusCode::BAD_REQUEST,
                12,
                "invalid input: port VLUNs (portPos) are not modelled by the fake",
            )
        }
        _ => {
            return wsapi_err(
                StatusCode::BAD_REQUEST,
                40,
                "incomplete VLUN info: volumeName,lun,hostname",
            )
        }
    };
    let Ok(lun) = lun.parse::<u32>() else {
        return wsapi_err(StatusCode::BAD_REQUEST, 39, "invalid input: LUN is not a number");
    };
    if !st.hosts.contains(host) {
        return wsapi_err(StatusCode::NOT_FOUND, 17, &format!("host does not exist: {host}"));
    }
    let Some(i) = st
        .vluns
        .iter()
        .position(|v| v.volume_name == vol && v.lun == lun && v.hostname == host)
    else {
        return wsapi_err(
            StatusCode::NOT_FOUND,
            19,
            &format!("VLUN does not exist: {vol},{lun},{host}"),
        );
    };
    st.vluns.remove(i);
    (StatusCode::OK, Value::Null)
}
