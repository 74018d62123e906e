//! JSON Schemas of the wire messages (and of an audit export's lines), generated from the Rust types. The files
//! in `schemas/` are these, checked in; a test fails when they drift.

use schemars::schema_for;
use serde_json::Value;

use crate::export::Line;
use crate::wire::{Command, EventMessage, Report, Request};

/// `(file name, schema)` for every wire message.
pub fn all() -> Vec<(&'static str, Value)> {
    let v = |s: schemars::Schema| s.to_value();
    vec![
        ("request.schema.json", v(schema_for!(Request))),
        ("command.schema.json", v(schema_for!(Command))),
        ("report.schema.json", v(schema_for!(Report))),
        ("event.schema.json", v(schema_for!(EventMessage))),
        ("audit-export.schema.json", v(schema_for!(Line))),
    ]
}

/// The text written to disk for a schema: pretty JSON with a final newline.
pub fn render(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("schemas serialize");
    s.push('\n');
    s
}
