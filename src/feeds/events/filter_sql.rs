//! Filters as SQL predicates with parameters: values are bound, never
//! written into the SQL text; pattern syntax is escaped here, and only
//! here.

use crate::domain::{FieldMatch, Filters};

/// ` AND ...` predicates and their parameters.
pub(crate) fn filter_sql(f: &Filters) -> (String, Vec<(String, serde_json::Value)>) {
    let mut sql = String::new();
    let mut params: Vec<(String, serde_json::Value)> = Vec::new();
    let bind = |name: &str, value: serde_json::Value, params: &mut Vec<_>| {
        params.push((format!("@{name}"), value));
        format!("@{name}")
    };
    if let Some(t) = &f.from_time {
        sql.push_str(&format!(" AND c.time >= {}", bind("from", t.clone().into(), &mut params)));
    }
    if let Some(t) = &f.to_time {
        sql.push_str(&format!(" AND c.time <= {}", bind("to", t.clone().into(), &mut params)));
    }
    // Altinn matches types and sources like SQL ILIKE: case-insensitive, `%`
    // any run of characters, `_` one character; several values are
    // alternatives.
    for (field, values, name) in [("type", &f.types, "t"), ("source", &f.sources, "src")] {
        if values.is_empty() {
            continue;
        }
        let parts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let p = bind(&format!("{name}{i}"), ilike_pattern(v).into(), &mut params);
                format!("LOWER(c.{field}) LIKE {p} ESCAPE '!'")
            })
            .collect();
        sql.push_str(&format!(" AND ({})", parts.join(" OR ")));
    }
    // A subscription's matches: plain values, so every wildcard in them is
    // escaped; compared in lower case, as the patterns above.
    for (i, m) in f.matches.iter().enumerate() {
        let (field, pattern) = match m {
            FieldMatch::TypeEquals(t) => ("type", like_literal(t)),
            FieldMatch::SourceStartsWith(s) => ("source", format!("{}%", like_literal(s))),
        };
        let p = bind(&format!("m{i}"), pattern.into(), &mut params);
        sql.push_str(&format!(" AND LOWER(c.{field}) LIKE {p} ESCAPE '!'"));
    }
    if let Some(s) = &f.subject {
        sql.push_str(&format!(" AND c.subject = {}", bind("subject", s.clone().into(), &mut params)));
    }
    if let Some(s) = &f.alternative_subject {
        sql.push_str(&format!(" AND c.alternativesubject = {}", bind("alt", s.clone().into(), &mut params)));
    }
    if let Some(s) = &f.resource {
        sql.push_str(&format!(" AND c.resource = {}", bind("res", s.clone().into(), &mut params)));
    }
    if let Some(s) = &f.resource_prefix {
        sql.push_str(&format!(" AND STARTSWITH(c.resource, {})", bind("resprefix", s.clone().into(), &mut params)));
    }
    if let Some(n) = f.imported_after {
        let p = bind("aseq", n.into(), &mut params);
        sql.push_str(&format!(" AND (NOT IS_DEFINED(c.aseq) OR c.aseq > {p})"));
    }
    if let Some(s) = &f.resource_instance {
        sql.push_str(&format!(" AND c.resourceinstance = {}", bind("ri", s.clone().into(), &mut params)));
    }
    (sql, params)
}

/// An ILIKE pattern (PostgreSQL's, as Altinn uses it) as a Cosmos `LIKE`
/// pattern with escape character `!`, in lower case (the field is compared
/// in lower case): `%` and `_` stay wildcards, `\x` is a literal `x`, and
/// `[` (a character class in Cosmos) and `!` match themselves.
fn ilike_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars().flat_map(char::to_lowercase);
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(l @ ('%' | '_' | '[' | '!')) => {
                    out.push('!');
                    out.push(l);
                }
                Some(l) => out.push(l),
                None => out.push('\\'),
            },
            '[' | '!' => {
                out.push('!');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A plain value as a Cosmos `LIKE` pattern with escape character `!`
/// that matches it alone, in lower case: `%`, `_`, `[` and `!` are escaped.
fn like_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars().flat_map(char::to_lowercase) {
        if matches!(c, '%' | '_' | '[' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ilike_patterns_keep_both_wildcards_and_fold_case() {
        assert_eq!(ilike_pattern("App.Instance.%"), "app.instance.%");
        assert_eq!(ilike_pattern("https://ttd.apps/ttd/apps_test/%"), "https://ttd.apps/ttd/apps_test/%");
        assert_eq!(ilike_pattern("a[b]!%"), "a![b]!!%");
        assert_eq!(ilike_pattern(r"100\%\_x\y\"), r"100!%!_xy\");
    }

    #[test]
    fn filters_become_parameterised_predicates() {
        let f = Filters {
            types: vec!["app.instance.created".into()],
            sources: vec!["https://x/%".into(), "exact".into()],
            from_time: Some("2026-01-01T00:00:00.000000Z".into()),
            ..Filters::default()
        };
        let (sql, params) = filter_sql(&f);
        assert_eq!(
            sql,
            " AND c.time >= @from AND (LOWER(c.type) LIKE @t0 ESCAPE '!') AND (LOWER(c.source) LIKE @src0 ESCAPE '!' OR LOWER(c.source) LIKE @src1 ESCAPE '!')"
        );
        assert_eq!(params.len(), 4);
        assert!(!sql.contains("https://"), "values never enter the SQL text");
    }

    #[test]
    fn plain_values_match_only_themselves() {
        assert_eq!(like_literal("App.Instance_Created"), "app.instance!_created");
        assert_eq!(like_literal(r"100%[a]!\x"), r"100!%![a]!!\x");
        assert_eq!(like_literal(""), "");
    }

    proptest::proptest! {
        /// A plain value matches as the ILIKE pattern that escapes each of
        /// its wildcards would (how subscriptions' filters were matched
        /// before they were typed).
        #[test]
        fn a_plain_value_is_the_ilike_pattern_that_escapes_it(value in "[a-zA-Z0-9%_!\\[\\]\\\\.:/ ÅæİẞΣ-]{0,24}") {
            let escaped = value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            proptest::prop_assert_eq!(like_literal(&value), ilike_pattern(&escaped));
        }
    }

    #[test]
    fn a_subscriptions_matches_are_bound_and_escaped() {
        let f = Filters {
            matches: vec![
                FieldMatch::TypeEquals("App.%".into()),
                FieldMatch::SourceStartsWith("https://ttd.apps/ttd/my_app".into()),
            ],
            resource: Some("urn:altinn:resource:app_ttd_my_app".into()),
            ..Filters::default()
        };
        let (sql, params) = filter_sql(&f);
        assert_eq!(
            sql,
            " AND LOWER(c.type) LIKE @m0 ESCAPE '!' AND LOWER(c.source) LIKE @m1 ESCAPE '!' AND c.resource = @res"
        );
        let values: Vec<(&str, &str)> = params.iter().map(|(n, v)| (n.as_str(), v.as_str().unwrap())).collect();
        assert_eq!(
            values,
            [
                ("@m0", "app.!%"),
                ("@m1", "https://ttd.apps/ttd/my!_app%"),
                ("@res", "urn:altinn:resource:app_ttd_my_app")
            ]
        );
    }
}
