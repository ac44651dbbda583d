//! The Docker volume plugin protocol (`/Plugin.Activate`, `/VolumeDriver.*`) over a
//! [`VolumeStore`]: JSON in, JSON out, failures in `Err`.

use crate::driver::DriverConfig;
use crate::error::VolumeError;
use crate::spec::{MountId, VolumeName};
use crate::store::{Volume, VolumeStore};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// An answer to one request, and a short note for the server's log.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub note: String,
}

impl Reply {
    fn ok(body: Value, note: impl Into<String>) -> Reply {
        Reply { status: 200, body, note: note.into() }
    }

    /// Status 400 for what the client got wrong, 500 for what failed on the host (as the
    /// reference plugins do); clients read the message from `Err` either way.
    pub fn error(err: &VolumeError) -> Reply {
        let status = match err {
            VolumeError::BadRequest(_)
            | VolumeError::InvalidName { .. }
            | VolumeError::InvalidMountId { .. }
            | VolumeError::UnknownDriver { .. }
            | VolumeError::UnknownOptions { .. }
            | VolumeError::MissingOption { .. }
            | VolumeError::InvalidOption { .. } => 400,
            _ => 500,
        };
        Reply::failure(status, err.to_string())
    }

    pub fn failure(status: u16, message: String) -> Reply {
        Reply { status, body: json!({ "Err": message }), note: message }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameRequest {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    name: String,
    #[serde(default)]
    opts: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MountRequest {
    name: String,
    #[serde(rename = "ID")]
    id: String,
}

/// Answers one request. Never panics on any input.
pub fn dispatch(store: &VolumeStore, method: &str, path: &str, body: &[u8]) -> Reply {
    if method != "POST" {
        return Reply::failure(405, format!("method {method} not allowed; the plugin API uses POST"));
    }
    let outcome = match path {
        "/Plugin.Activate" => Ok(Reply::ok(json!({ "Implements": ["VolumeDriver"] }), "")),
        "/VolumeDriver.Capabilities" => Ok(Reply::ok(json!({ "Capabilities": { "Scope": "local" } }), "")),
        "/VolumeDriver.Create" => create(store, body),
        "/VolumeDriver.Remove" => remove(store, body),
        "/VolumeDriver.Mount" => mount(store, body),
        "/VolumeDriver.Unmount" => unmount(store, body),
        "/VolumeDriver.Path" => volume_path(store, body),
        "/VolumeDriver.Get" => get(store, body),
        "/VolumeDriver.List" => list(store),
        _ => return Reply::failure(404, format!("unknown endpoint {path}")),
    };
    outcome.unwrap_or_else(|err| Reply::error(&err))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, VolumeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(VolumeError::BadRequest("the request has no JSON body".into()));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|err| VolumeError::BadRequest(format!("invalid JSON body: {err}")))?;
    // serde would also fill a struct from an array, by position: insist on an object.
    if !value.is_object() {
        return Err(VolumeError::BadRequest("the body must be a JSON object".into()));
    }
    T::deserialize(value).map_err(|err| VolumeError::BadRequest(format!("invalid request: {err}")))
}

/// What [`dispatch`] reads from a request's body before the store sees it: `Err` is the
/// 400 the request gets. For the fuzz targets, which must not touch a store.
#[doc(hidden)]
pub fn decode(path: &str, body: &[u8]) -> Result<(), VolumeError> {
    match path {
        "/VolumeDriver.Create" => create_request(body).map(drop),
        "/VolumeDriver.Mount" | "/VolumeDriver.Unmount" => mount_request(body).map(drop),
        "/VolumeDriver.Remove" | "/VolumeDriver.Path" | "/VolumeDriver.Get" => name_request(body).map(drop),
        _ => Ok(()),
    }
}

fn create_request(body: &[u8]) -> Result<(VolumeName, DriverConfig), VolumeError> {
    let request: CreateRequest = parse(body)?;
    let name = VolumeName::parse(&request.name)?;
    let options = request.opts.unwrap_or_default();
    let config = DriverConfig::from_options(&name, None, &options)?;
    Ok((name, config))
}

fn name_request(body: &[u8]) -> Result<VolumeName, VolumeError> {
    VolumeName::parse(&parse::<NameRequest>(body)?.name)
}

fn create(store: &VolumeStore, body: &[u8]) -> Result<Reply, VolumeError> {
    let (name, config) = create_request(body)?;
    let volume = store.create(&name, config)?;
    Ok(Reply::ok(json!({ "Err": "" }), format!("{name} ({})", volume.kind())))
}

fn remove(store: &VolumeStore, body: &[u8]) -> Result<Reply, VolumeError> {
    let name = name_request(body)?;
    store.remove(&name)?;
    Ok(Reply::ok(json!({ "Err": "" }), name.to_string()))
}

fn mount_request(body: &[u8]) -> Result<(VolumeName, MountId), VolumeError> {
    let request: MountRequest = parse(body)?;
    Ok((VolumeName::parse(&request.name)?, MountId::parse(&request.id)?))
}

fn mount(store: &VolumeStore, body: &[u8]) -> Result<Reply, VolumeError> {
    let (name, id) = mount_request(body)?;
    let mountpoint = store.mount(&name, &id)?.display().to_string();
    Ok(Reply::ok(json!({ "Mountpoint": mountpoint, "Err": "" }), format!("{name} for {id}")))
}

fn unmount(store: &VolumeStore, body: &[u8]) -> Result<Reply, VolumeError> {
    let (name, id) = mount_request(body)?;
    let outcome = store.unmount(&name, &id)?;
    Ok(Reply::ok(json!({ "Err": "" }), format!("{name} for {id}: {outcome:?}")))
}

fn volume_path(store: &VolumeStore, body: &[u8]) -> Result<Reply, VolumeError> {
    let name = name_request(body)?;
    let volume = store.get(&name)?;
    let mountpoint = store.mountpoint(&volume).map(|p| p.display().to_string()).unwrap_or_default();
    Ok(Reply::ok(json!({ "Mountpoint": mountpoint, "Err": "" }), name.to_string()))
}

fn get(store: &VolumeStore, body: &[u8]) -> Result<Reply, VolumeError> {
    let name = name_request(body)?;
    let volume = store.get(&name)?;
    let mut described = describe(store, &volume);
    let driver = volume.config.driver();
    described["Status"] = json!({
        "Driver": driver.kind(),
        "Options": driver.options(),
        "MountIDs": volume.mounts,
    });
    // Usage (a quota's or a thin pool's) as far as the driver can tell; Get still answers
    // when it cannot.
    if let Ok(status) = store.inspect(&name) {
        described["Status"]["Usage"] = json!(status.usage);
    }
    Ok(Reply::ok(json!({ "Volume": described, "Err": "" }), name.to_string()))
}

fn list(store: &VolumeStore) -> Result<Reply, VolumeError> {
    let volumes: Vec<Value> = store.list()?.iter().map(|volume| describe(store, volume)).collect();
    let note = format!("{} volumes", volumes.len());
    Ok(Reply::ok(json!({ "Volumes": volumes, "Err": "" }), note))
}

/// Name, creation time and the mount point: where the data is, or will be while mounted,
/// as Docker's own `local` driver reports it (`docker volume inspect` shows it).
fn describe(store: &VolumeStore, volume: &Volume) -> Value {
    let mountpoint = store.layout(&volume.name).data().display().to_string();
    json!({ "Name": volume.name, "CreatedAt": volume.created_at, "Mountpoint": mountpoint })
}
