//! Writ's Cedar schema, shipped inside the binary.

use std::sync::OnceLock;

use cedar_policy::Schema;

/// The schema text (`writ policy schema` prints it).
pub const SCHEMA_TEXT: &str = include_str!("writ.cedarschema");

/// The parsed schema. It is part of Writ, so a failure to parse it is a bug caught by the
/// tests, never a user's problem; should it happen anyway, the empty schema it falls back
/// to validates no policy, and every request is denied.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::from_cedarschema_str(SCHEMA_TEXT)
            .map(|(schema, _warnings)| schema)
            .unwrap_or_else(|e| {
                tracing_fallback(&e.to_string());
                Schema::from_cedarschema_str("").map_or_else(|_| unreachable_schema(), |(s, _)| s)
            })
    })
}

fn tracing_fallback(error: &str) {
    // No logger dependency here: the gateway logs load results; this is for a broken build.
    eprintln!("writ: the built-in Cedar schema does not parse: {error}");
}

fn unreachable_schema() -> Schema {
    // An empty schema always parses; this is only to avoid a panic path in the type.
    Schema::from_json_value(serde_json::json!({})).unwrap_or_else(|_| unreachable_schema())
}
