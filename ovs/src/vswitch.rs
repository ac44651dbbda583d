//! The transactions berth-ovs sends to the `Open_vSwitch` database (vswitch.ovsschema),
//! and what it reads back.
//!
//! - ADD: one transaction inserts the Interface and the Port (tag, trunks, vlan_mode,
//!   external_ids) and adds the Port to the Bridge's `ports`, referring to the new rows by
//!   `named-uuid`; the same transaction increments `Open_vSwitch.next_cfg` and reads it
//!   back. A second one waits (server side, a `wait` with a timeout) until ovs-vswitchd has
//!   set `cur_cfg` to at least that value, i.e. applied the change, and reads the
//!   Interface's `ofport` and `error`: when ADD returns, the port is in the datapath.
//! - DEL: the Port's UUID is looked up by name; one transaction removes it from the
//!   Bridge's `ports` (mutate delete) and increments `next_cfg`. Port and Interface are not
//!   root tables, so the rows no other row references any more are garbage-collected when
//!   that transaction commits (RFC 7047 section 3.2, "isRoot"), as after `ovs-vsctl
//!   del-port`; then the same wait.
//!
//! This is what `ovs-vsctl add-port` / `del-port` do, without a process per change.

use crate::ovsdb::{self, condition, map, named_uuid, set, set_atoms, uuid, Client, OvsdbError, OvsdbResult};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub const DB: &str = "Open_vSwitch";
/// `external_ids:owner` of the ports and bridges berth-ovs creates; DEL removes no other.
pub const OWNER: &str = "berth-ovs";

/// How long one request may take (ovsdb-server answers a unix socket in microseconds).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long ovs-vswitchd may take to apply a change (`ovs-vsctl --timeout`).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The VLANs of a port: an access port on `tag`, or a trunk of `trunks` (all VLANs when
/// empty), as ovs-cni sets them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vlans {
    pub tag: Option<u16>,
    /// Sorted, without duplicates.
    pub trunks: Vec<u16>,
}

impl Vlans {
    pub fn vlan_mode(&self) -> &'static str {
        if self.tag.is_some() {
            "access"
        } else {
            "trunk"
        }
    }
}

/// A port to add, with its interface of the same name: a system interface (the host end of a
/// veth: `iface_type` ""), or a tunnel (`"gre"`, `"vxlan"`, with `options` such as
/// `remote_ip` and `key`).
#[derive(Debug, Clone)]
pub struct NewPort<'a> {
    pub bridge: &'a str,
    pub name: &'a str,
    pub iface_type: &'a str,
    pub options: &'a [(&'a str, &'a str)],
    pub vlans: &'a Vlans,
    pub external_ids: &'a [(&'a str, &'a str)],
}

/// A Port row as berth-ovs reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRow {
    pub uuid: String,
    pub name: String,
    pub tag: Option<u16>,
    pub trunks: Vec<u16>,
    pub vlan_mode: Option<String>,
    pub external_ids: BTreeMap<String, String>,
}

impl PortRow {
    pub fn owned_by_berth(&self) -> bool {
        self.external_ids.get("owner").map(String::as_str) == Some(OWNER)
    }

    pub fn vlans(&self) -> Vlans {
        Vlans { tag: self.tag, trunks: self.trunks.clone() }
    }
}

/// An Interface row: its type and options as configured, and what ovs-vswitchd made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceRow {
    pub iface_type: String,
    pub options: BTreeMap<String, String>,
    pub state: InterfaceState,
}

/// What ovs-vswitchd reports about an interface once it has applied the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceState {
    /// The OpenFlow port number; -1 when the interface could not be added.
    pub ofport: Option<i64>,
    pub error: Option<String>,
}

/// What CHECK compares: the port, the bridge's ports, the interface.
#[derive(Debug, Clone)]
pub struct PortView {
    pub port: Option<PortRow>,
    /// UUIDs of the bridge's ports; `None` when there is no such bridge.
    pub bridge_ports: Option<Vec<String>>,
    pub interface: Option<InterfaceState>,
}

// ---- operations, built apart from sending them so they can be tested ----

fn bump_next_cfg() -> Value {
    json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]})
}

fn select_next_cfg() -> Value {
    json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]})
}

fn by_name(name: &str) -> Value {
    json!([condition("name", "==", json!(name))])
}

/// Interface + Port + Bridge.ports, and next_cfg: one transaction.
pub fn add_port_ops(p: &NewPort) -> Vec<Value> {
    let mut port = json!({
        "name": p.name,
        "interfaces": named_uuid("iface"),
        "vlan_mode": p.vlans.vlan_mode(),
        "external_ids": map(p.external_ids.iter().copied()),
    });
    if let Some(tag) = p.vlans.tag {
        port["tag"] = json!(tag);
    }
    if !p.vlans.trunks.is_empty() {
        port["trunks"] = set(p.vlans.trunks.iter().map(|&v| json!(v)));
    }
    let mut iface = json!({"name": p.name, "type": p.iface_type});
    if !p.options.is_empty() {
        iface["options"] = map(p.options.iter().copied());
    }
    vec![
        json!({"op": "insert", "table": "Interface", "uuid-name": "iface", "row": iface}),
        json!({"op": "insert", "table": "Port", "uuid-name": "port", "row": port}),
        json!({
            "op": "mutate", "table": "Bridge", "where": by_name(p.bridge),
            "mutations": [["ports", "insert", set([named_uuid("port")])]],
        }),
        bump_next_cfg(),
        select_next_cfg(),
    ]
}

/// The Port out of every Bridge that has it (its rows are then garbage-collected), and
/// next_cfg: one transaction.
pub fn del_port_ops(port_uuid: &str) -> Vec<Value> {
    vec![
        json!({
            "op": "mutate", "table": "Bridge", "where": [condition("ports", "includes", uuid(port_uuid))],
            "mutations": [["ports", "delete", set([uuid(port_uuid)])]],
        }),
        bump_next_cfg(),
        select_next_cfg(),
    ]
}

/// A bridge with its internal port, as `ovs-vsctl add-br` makes it, and next_cfg.
pub fn create_bridge_ops(name: &str) -> Vec<Value> {
    vec![
        json!({"op": "insert", "table": "Interface", "uuid-name": "brif", "row": {"name": name, "type": "internal"}}),
        json!({"op": "insert", "table": "Port", "uuid-name": "brport", "row": {"name": name, "interfaces": named_uuid("brif")}}),
        json!({
            "op": "insert", "table": "Bridge", "uuid-name": "bridge",
            "row": {"name": name, "ports": set([named_uuid("brport")]), "external_ids": map([("owner", OWNER)])},
        }),
        json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["bridges", "insert", set([named_uuid("bridge")])]]}),
        bump_next_cfg(),
        select_next_cfg(),
    ]
}

/// Blocks in ovsdb-server until `cur_cfg >= cfg` (or `timeout`), then reads `iface`.
///
/// The `wait` selects the rows with `cur_cfg >= cfg` projected on no column: that is
/// `[{}]` once the one Open_vSwitch row qualifies, `[]` before; with a timeout the server
/// re-runs the transaction on every change until it holds.
pub fn wait_applied_ops(cfg: i64, timeout: Duration, iface: Option<&str>) -> Vec<Value> {
    let mut ops = vec![json!({
        "op": "wait", "table": "Open_vSwitch", "where": [condition("cur_cfg", ">=", json!(cfg))],
        "columns": [], "until": "==", "rows": [{}], "timeout": timeout.as_millis() as u64,
    })];
    if let Some(name) = iface {
        ops.push(json!({"op": "select", "table": "Interface", "where": by_name(name), "columns": ["ofport", "error"]}));
    }
    ops
}

fn select_port_ops(name: &str, bridge: Option<&str>) -> Vec<Value> {
    let mut ops = vec![json!({
        "op": "select", "table": "Port", "where": by_name(name),
        "columns": ["_uuid", "name", "tag", "trunks", "vlan_mode", "external_ids"],
    })];
    if let Some(bridge) = bridge {
        ops.push(json!({"op": "select", "table": "Bridge", "where": by_name(bridge), "columns": ["ports"]}));
        ops.push(json!({"op": "select", "table": "Interface", "where": by_name(name), "columns": ["ofport", "error"]}));
    }
    ops
}

// ---- reading rows ----

fn next_cfg(results: &[Value]) -> OvsdbResult<i64> {
    let row = results.last().and_then(|r| ovsdb::rows(r).first().copied()).ok_or(OvsdbError::NotInitialised)?;
    row.get("next_cfg").and_then(Value::as_i64).ok_or_else(|| OvsdbError::Protocol(format!("next_cfg in {row:?}")))
}

/// The one Open_vSwitch row must have been there for the change to count.
fn require_root_row(mutate_result: &Value) -> OvsdbResult<()> {
    if ovsdb::count(mutate_result) == 0 {
        return Err(OvsdbError::NotInitialised);
    }
    Ok(())
}

/// The UUIDs of a set of references.
fn uuids(value: Option<&Value>) -> Vec<String> {
    value.map(set_atoms).unwrap_or_default().into_iter().filter_map(ovsdb::uuid_of).map(str::to_string).collect()
}

fn small_ints(value: Option<&Value>) -> Vec<u16> {
    let mut out: Vec<u16> = value
        .map(set_atoms)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_u64())
        .filter_map(|v| u16::try_from(v).ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub fn port_row(row: &serde_json::Map<String, Value>) -> OvsdbResult<PortRow> {
    let uuid = row
        .get("_uuid")
        .and_then(ovsdb::uuid_of)
        .ok_or_else(|| OvsdbError::Protocol(format!("Port row without _uuid: {row:?}")))?;
    Ok(PortRow {
        uuid: uuid.to_string(),
        name: row.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        tag: small_ints(row.get("tag")).first().copied(),
        trunks: small_ints(row.get("trunks")),
        vlan_mode: row.get("vlan_mode").map(set_atoms).and_then(|a| a.first().and_then(|v| v.as_str()).map(str::to_string)),
        external_ids: row.get("external_ids").map(ovsdb::string_map).unwrap_or_default(),
    })
}

fn interface_state(result: &Value) -> Option<InterfaceState> {
    let row = *ovsdb::rows(result).first()?;
    Some(InterfaceState {
        ofport: row.get("ofport").map(set_atoms).and_then(|a| a.first().and_then(|v| v.as_i64())),
        error: row.get("error").map(set_atoms).and_then(|a| a.first().and_then(|v| v.as_str()).map(str::to_string)),
    })
}

fn interface_row(result: &Value) -> Option<InterfaceRow> {
    let row = *ovsdb::rows(result).first()?;
    Some(InterfaceRow {
        iface_type: row.get("type").and_then(Value::as_str).unwrap_or_default().to_string(),
        options: row.get("options").map(ovsdb::string_map).unwrap_or_default(),
        state: interface_state(result)?,
    })
}

/// A connection to the Open_vSwitch database.
pub struct Vswitch {
    client: Client,
}

impl Vswitch {
    pub fn connect(endpoint: &str) -> OvsdbResult<Vswitch> {
        Ok(Vswitch { client: Client::connect(endpoint)? })
    }

    pub fn transact(&mut self, ops: &[Value]) -> OvsdbResult<Vec<Value>> {
        self.client.transact(DB, ops, REQUEST_TIMEOUT)
    }

    pub fn bridge_exists(&mut self, name: &str) -> OvsdbResult<bool> {
        let results =
            self.transact(&[json!({"op": "select", "table": "Bridge", "where": by_name(name), "columns": ["name"]})])?;
        Ok(!ovsdb::rows(&results[0]).is_empty())
    }

    /// Creates the bridge; `Ok(None)` when another client created it meanwhile, else the
    /// configuration generation that has it.
    pub fn create_bridge(&mut self, name: &str) -> OvsdbResult<Option<i64>> {
        match self.transact(&create_bridge_ops(name)) {
            Ok(results) => {
                require_root_row(&results[3])?;
                next_cfg(&results).map(Some)
            }
            // The name index: a bridge (or port) of that name appeared since we looked.
            Err(e) if e.ovsdb_error() == Some("constraint violation") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds the port; returns the configuration generation to wait for. A port or
    /// interface of that name already there fails with "constraint violation".
    pub fn add_port(&mut self, p: &NewPort) -> OvsdbResult<i64> {
        let results = self.transact(&add_port_ops(p))?;
        if ovsdb::count(&results[2]) == 0 {
            // Nothing references the new rows, so they were not kept.
            return Err(OvsdbError::NoBridge { bridge: p.bridge.to_string() });
        }
        require_root_row(&results[3])?;
        next_cfg(&results)
    }

    /// Removes the port from its bridge; returns the configuration generation to wait for.
    pub fn del_port(&mut self, port_uuid: &str) -> OvsdbResult<i64> {
        let results = self.transact(&del_port_ops(port_uuid))?;
        require_root_row(&results[1])?;
        next_cfg(&results)
    }

    pub fn port(&mut self, name: &str) -> OvsdbResult<Option<PortRow>> {
        let results = self.transact(&select_port_ops(name, None))?;
        ovsdb::rows(&results[0]).first().map(|r| port_row(r)).transpose()
    }

    /// The ports whose `external_ids` include all of `ids`.
    pub fn ports_with(&mut self, ids: &[(&str, &str)]) -> OvsdbResult<Vec<PortRow>> {
        let results = self.transact(&[json!({
            "op": "select", "table": "Port", "where": [condition("external_ids", "includes", map(ids.iter().copied()))],
            "columns": ["_uuid", "name", "tag", "trunks", "vlan_mode", "external_ids"],
        })])?;
        ovsdb::rows(&results[0]).into_iter().map(port_row).collect()
    }

    /// The interface `name`: type, options and state.
    pub fn interface(&mut self, name: &str) -> OvsdbResult<Option<InterfaceRow>> {
        let columns = ["type", "options", "ofport", "error"];
        let results =
            self.transact(&[json!({"op": "select", "table": "Interface", "where": by_name(name), "columns": columns})])?;
        Ok(interface_row(&results[0]))
    }

    /// The UUIDs of the bridge's ports; `None` when there is no such bridge.
    pub fn bridge_ports(&mut self, bridge: &str) -> OvsdbResult<Option<Vec<String>>> {
        let results =
            self.transact(&[json!({"op": "select", "table": "Bridge", "where": by_name(bridge), "columns": ["ports"]})])?;
        Ok(ovsdb::rows(&results[0]).first().map(|row| uuids(row.get("ports"))))
    }

    /// The port, the bridge's ports and the interface, read in one transaction.
    pub fn view(&mut self, name: &str, bridge: &str) -> OvsdbResult<PortView> {
        let results = self.transact(&select_port_ops(name, Some(bridge)))?;
        let port = ovsdb::rows(&results[0]).first().map(|r| port_row(r)).transpose()?;
        let bridge_ports = ovsdb::rows(&results[1]).first().map(|row| uuids(row.get("ports")));
        Ok(PortView { port, bridge_ports, interface: interface_state(&results[2]) })
    }

    /// Waits until ovs-vswitchd has applied configuration `cfg` (at most `timeout`), and
    /// returns what it made of `iface`.
    pub fn wait_applied(&mut self, cfg: i64, timeout: Duration, iface: Option<&str>) -> OvsdbResult<Option<InterfaceState>> {
        let ops = wait_applied_ops(cfg, timeout, iface);
        // The server holds the answer until the wait is over.
        match self.client.transact(DB, &ops, timeout + REQUEST_TIMEOUT) {
            Ok(results) => Ok(results.get(1).and_then(interface_state)),
            Err(e) if e.ovsdb_error() == Some("timed out") => Err(OvsdbError::NotApplied { cfg, after: timeout }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_port_is_one_transaction_with_named_uuids() {
        let vlans = Vlans { tag: Some(100), trunks: vec![] };
        let ops = add_port_ops(&NewPort {
            bridge: "br0",
            name: "veth1",
            iface_type: "",
            options: &[],
            vlans: &vlans,
            external_ids: &[("owner", OWNER)],
        });
        assert_eq!(
            ops[0],
            json!({"op": "insert", "table": "Interface", "uuid-name": "iface", "row": {"name": "veth1", "type": ""}})
        );
        assert_eq!(ops[1]["row"]["interfaces"], json!(["named-uuid", "iface"]));
        assert_eq!(ops[1]["row"]["tag"], 100);
        assert_eq!(ops[1]["row"]["vlan_mode"], "access");
        assert!(ops[1]["row"].get("trunks").is_none());
        assert_eq!(ops[1]["row"]["external_ids"], json!(["map", [["owner", "berth-ovs"]]]));
        assert_eq!(ops[2]["where"], json!([["name", "==", "br0"]]));
        assert_eq!(ops[2]["mutations"], json!([["ports", "insert", ["set", [["named-uuid", "port"]]]]]));
        assert_eq!(ops[3]["mutations"], json!([["next_cfg", "+=", 1]]));
        assert_eq!(ops[4]["columns"], json!(["next_cfg"]));

        let trunk = Vlans { tag: None, trunks: vec![100, 200] };
        let ops = add_port_ops(&NewPort {
            bridge: "br0",
            name: "veth2",
            iface_type: "",
            options: &[],
            vlans: &trunk,
            external_ids: &[],
        });
        assert_eq!(ops[1]["row"]["trunks"], json!(["set", [100, 200]]));
        assert_eq!(ops[1]["row"]["vlan_mode"], "trunk");
        assert!(ops[1]["row"].get("tag").is_none());

        // A tunnel, as `ovs-vsctl add-port br0 gre0 -- set interface gre0 type=gre options:...`.
        let options = [("remote_ip", "192.0.2.2"), ("key", "5")];
        let ops = add_port_ops(&NewPort {
            bridge: "br0",
            name: "gre0",
            iface_type: "gre",
            options: &options,
            vlans: &trunk,
            external_ids: &[],
        });
        assert_eq!(
            ops[0]["row"],
            json!({"name": "gre0", "type": "gre", "options": ["map", [["remote_ip", "192.0.2.2"], ["key", "5"]]]})
        );
    }

    #[test]
    fn del_port_mutates_every_bridge_holding_it() {
        let ops = del_port_ops("5e0ae5c8-0000-4000-8000-000000000001");
        let u = json!(["uuid", "5e0ae5c8-0000-4000-8000-000000000001"]);
        assert_eq!(ops[0]["where"], json!([["ports", "includes", u]]));
        assert_eq!(ops[0]["mutations"], json!([["ports", "delete", ["set", [u]]]]));
        assert_eq!(ops.len(), 3, "no explicit delete: Port and Interface are garbage-collected");
    }

    #[test]
    fn wait_blocks_on_cur_cfg_in_the_server() {
        let ops = wait_applied_ops(42, Duration::from_secs(20), Some("veth1"));
        assert_eq!(ops[0]["where"], json!([["cur_cfg", ">=", 42]]));
        assert_eq!(ops[0]["timeout"], 20000);
        assert_eq!(ops[0]["rows"], json!([{}]));
        assert_eq!(ops[1]["table"], "Interface");
    }

    #[test]
    fn bridges_are_made_as_add_br_makes_them() {
        let ops = create_bridge_ops("br1");
        assert_eq!(ops[0]["row"]["type"], "internal");
        assert_eq!(ops[2]["row"]["ports"], json!(["set", [["named-uuid", "brport"]]]));
        assert_eq!(ops[3]["mutations"], json!([["bridges", "insert", ["set", [["named-uuid", "bridge"]]]]]));
    }

    #[test]
    fn port_rows_read_sets_of_one_and_empty_sets() {
        let row = json!({
            "_uuid": ["uuid", "u1"], "name": "veth1", "tag": 100, "trunks": ["set", []], "vlan_mode": "access",
            "external_ids": ["map", [["owner", "berth-ovs"]]],
        });
        let p = port_row(row.as_object().unwrap()).unwrap();
        assert_eq!((p.tag, p.trunks.as_slice(), p.vlan_mode.as_deref()), (Some(100), &[][..], Some("access")));
        assert!(p.owned_by_berth());
        let row = json!({"_uuid": ["uuid", "u2"], "name": "veth2", "tag": ["set", []], "trunks": ["set", [200, 100]], "vlan_mode": ["set", []], "external_ids": ["map", []]});
        let p = port_row(row.as_object().unwrap()).unwrap();
        assert_eq!((p.tag, p.trunks.as_slice(), p.vlan_mode.as_deref()), (None, &[100, 200][..], None));
        assert!(!p.owned_by_berth());
        let single = json!({"_uuid": ["uuid", "u3"], "trunks": 300});
        assert_eq!(port_row(single.as_object().unwrap()).unwrap().trunks, vec![300]);
    }

    #[test]
    fn next_cfg_needs_the_root_row() {
        assert_eq!(next_cfg(&[json!({"rows": [{"next_cfg": 5}]})]).unwrap(), 5);
        assert!(matches!(next_cfg(&[json!({"rows": []})]), Err(OvsdbError::NotInitialised)));
        assert!(matches!(require_root_row(&json!({"count": 0})), Err(OvsdbError::NotInitialised)));
    }
}
