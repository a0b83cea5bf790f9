//! Deterministic Starlark text in buildifier's layout: one call per block, one item per line.

use std::fmt::Write;

pub fn string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() => write!(quoted, "\\x{:02x}", c as u32).expect("writing to a String"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A value in a call's argument list.
pub enum Value {
    Str(String),
    Int(i64),
    List(Vec<String>),
    Dict(Vec<(String, String)>),
    /// Already Starlark (a label list built elsewhere, `True`, …).
    Raw(String),
}

pub fn str(value: impl Into<String>) -> Value {
    Value::Str(value.into())
}

pub fn list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::List(items.into_iter().map(|s| s.as_ref().to_owned()).collect())
}

/// A call such as `cc_toolchain(\n    name = "x",\n)\n`.
pub fn call(function: &str, arguments: Vec<(&str, Value)>) -> String {
    let mut text = format!("{function}(\n");
    for (name, value) in arguments {
        let rendered = match value {
            Value::Str(s) => string(&s),
            Value::Int(i) => i.to_string(),
            Value::Raw(raw) => raw,
            Value::List(items) if items.is_empty() => "[]".to_owned(),
            Value::List(items) => {
                let mut out = "[\n".to_owned();
                for item in items {
                    writeln!(out, "        {},", string(&item)).expect("writing to a String");
                }
                out + "    ]"
            }
            Value::Dict(entries) if entries.is_empty() => "{}".to_owned(),
            Value::Dict(entries) => {
                let mut out = "{\n".to_owned();
                for (key, value) in entries {
                    writeln!(out, "        {}: {},", string(&key), string(&value)).expect("writing to a String");
                }
                out + "    }"
            }
        };
        writeln!(text, "    {name} = {rendered},").expect("writing to a String");
    }
    text.push_str(")\n");
    text
}

pub fn load(file: &str, symbols: &[&str]) -> String {
    let symbols: Vec<String> = symbols.iter().map(|s| string(s)).collect();
    format!("load({}, {})\n", string(file), symbols.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        assert_eq!(string(r#"-D__DATE__="redacted""#), r#""-D__DATE__=\"redacted\"""#);
        assert_eq!(string("a\\b\nc"), r#""a\\b\nc""#);
    }

    #[test]
    fn formats_calls_like_buildifier() {
        let text = call(
            "platform",
            vec![
                ("name", str("lre-cc")),
                ("constraint_values", list(["@platforms//os:linux"])),
                ("exec_properties", Value::Dict(vec![("OSFamily".into(), "Linux".into())])),
                ("tags", list(Vec::<String>::new())),
                ("version", Value::Int(17)),
            ],
        );
        assert_eq!(
            text,
            "platform(\n    name = \"lre-cc\",\n    constraint_values = [\n        \"@platforms//os:linux\",\n    ],\n    exec_properties = {\n        \"OSFamily\": \"Linux\",\n    },\n    tags = [],\n    version = 17,\n)\n"
        );
    }
}
