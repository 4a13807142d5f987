//! Templates in a step's strings: `${input.a.b}`, `${steps.NAME.output.x}`, `${run.id}`
//! and `${step.idempotency_key}`. Strings render as they are, other JSON values as
//! compact JSON; a missing path is an error naming it. `$${` is a literal `${`.

use std::collections::BTreeMap;

use serde_json::Value;

/// What templates can refer to.
#[derive(Debug, Clone, Copy)]
pub struct TemplateContext<'a> {
    pub input: &'a Value,
    /// Outputs of succeeded steps, by name.
    pub steps: &'a BTreeMap<String, Value>,
    pub run_id: &'a str,
    /// The rendering step's idempotency key.
    pub step_key: &'a str,
}

/// One `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Input(Vec<String>),
    /// A step's output, and the path inside it.
    Step(String, Vec<String>),
    RunId,
    StepKey,
}

fn parse_reference(expr: &str) -> Result<Reference, String> {
    let parts: Vec<&str> = expr.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`${{{expr}}}` is not a reference"));
    }
    let owned = |rest: &[&str]| rest.iter().map(|s| (*s).to_owned()).collect();
    match parts.as_slice() {
        ["input", rest @ ..] => Ok(Reference::Input(owned(rest))),
        ["steps", name, "output", rest @ ..] => {
            Ok(Reference::Step((*name).to_owned(), owned(rest)))
        }
        ["run", "id"] => Ok(Reference::RunId),
        ["step", "idempotency_key"] => Ok(Reference::StepKey),
        _ => Err(format!(
            "`${{{expr}}}` is not one of ${{input...}}, ${{steps.NAME.output...}}, ${{run.id}}, ${{step.idempotency_key}}"
        )),
    }
}

/// Splits `text` into literal pieces and references.
fn scan(text: &str) -> Result<Vec<Result<String, Reference>>, String> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        literal.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            literal.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            if !literal.is_empty() {
                out.push(Ok(std::mem::take(&mut literal)));
            }
            out.push(Err(parse_reference(&tail[..end])?));
            rest = &tail[end + 1..];
        } else {
            literal.push('$');
            rest = &after[1..];
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        out.push(Ok(literal));
    }
    Ok(out)
}

/// Every reference in `text` (for validation).
pub fn references(text: &str) -> Result<Vec<Reference>, String> {
    Ok(scan(text)?.into_iter().filter_map(Result::err).collect())
}

fn walk<'v>(value: &'v Value, path: &[String], what: &str) -> Result<&'v Value, String> {
    let mut current = value;
    for (i, key) in path.iter().enumerate() {
        let next = match current {
            Value::Object(map) => map.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|n| items.get(n)),
            _ => None,
        };
        current = next.ok_or_else(|| format!("{what}.{} does not exist", path[..=i].join(".")))?;
    }
    Ok(current)
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders the references in `text`.
pub fn render(text: &str, cx: &TemplateContext<'_>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    for piece in scan(text)? {
        match piece {
            Ok(literal) => out.push_str(&literal),
            Err(Reference::Input(path)) => out.push_str(&text_of(walk(cx.input, &path, "input")?)),
            Err(Reference::Step(name, path)) => {
                let output = cx
                    .steps
                    .get(&name)
                    .ok_or_else(|| format!("step `{name}` has no output (it has not succeeded)"))?;
                out.push_str(&text_of(walk(
                    output,
                    &path,
                    &format!("steps.{name}.output"),
                )?));
            }
            Err(Reference::RunId) => out.push_str(cx.run_id),
            Err(Reference::StepKey) => out.push_str(cx.step_key),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_every_kind_of_reference() {
        let input = json!({"repo": {"url": "https://x"}, "n": 3, "list": ["a", "b"]});
        let mut steps = BTreeMap::new();
        steps.insert("build".to_owned(), json!({"exit_code": 0, "stdout": "ok"}));
        let cx = TemplateContext {
            input: &input,
            steps: &steps,
            run_id: "run_1",
            step_key: "run_1/s",
        };
        assert_eq!(
            render("git clone ${input.repo.url}", &cx).unwrap(),
            "git clone https://x"
        );
        assert_eq!(render("${input.n}-${input.list.1}", &cx).unwrap(), "3-b");
        assert_eq!(render("${steps.build.output.stdout}", &cx).unwrap(), "ok");
        assert_eq!(
            render("${steps.build.output}", &cx).unwrap(),
            r#"{"exit_code":0,"stdout":"ok"}"#
        );
        assert_eq!(
            render("${run.id} ${step.idempotency_key}", &cx).unwrap(),
            "run_1 run_1/s"
        );
        assert_eq!(
            render("cost $5, literal $${x}", &cx).unwrap(),
            "cost $5, literal ${x}"
        );
        assert!(
            render("${input.missing}", &cx)
                .unwrap_err()
                .contains("input.missing")
        );
        assert!(render("${steps.other.output}", &cx).is_err());
        assert!(render("${nope}", &cx).is_err());
        assert!(render("${input.a", &cx).is_err());
        assert_eq!(
            references("a ${steps.x.output.y} ${ input.z }").unwrap(),
            vec![
                Reference::Step("x".into(), vec!["y".into()]),
                Reference::Input(vec!["z".into()])
            ]
        );
    }

    #[test]
    fn values_escapes_and_errors() {
        let input = json!({
            "s": "text", "t": true, "z": null, "f": 1.5,
            "o": {"k": [1, {"x": "y"}]}, "ü": "ok"
        });
        let steps = BTreeMap::new();
        let cx = TemplateContext {
            input: &input,
            steps: &steps,
            run_id: "r",
            step_key: "k",
        };
        let ok = |t: &str| render(t, &cx).unwrap();
        assert_eq!(ok("${input.t} ${input.z} ${input.f}"), "true null 1.5");
        assert_eq!(ok("${input.o}"), r#"{"k":[1,{"x":"y"}]}"#);
        assert_eq!(ok("${input.o.k.1.x}"), "y");
        assert_eq!(ok("${input.ü}"), "ok");
        assert_eq!(ok("${input}"), input.to_string());
        // Dollars that open no reference are literal; `$${` is a literal `${`.
        assert_eq!(ok("$"), "$");
        assert_eq!(ok("a$$b$"), "a$$b$");
        assert_eq!(ok("$${input.s}"), "${input.s}");
        // Read left to right: a lone `$`, then the escape.
        assert_eq!(ok("$$${input.s}"), "$${input.s}");
        assert_eq!(ok("$${"), "${");
        assert_eq!(ok("no templates"), "no templates");
        assert!(references("$${steps.a.output}").unwrap().is_empty());
        // Errors name what is missing or wrong.
        let err = |t: &str| render(t, &cx).unwrap_err();
        assert!(err("${input.o.k.5}").contains("input.o.k.5"));
        assert!(err("${input.s.x}").contains("input.s.x"));
        assert!(err("${steps.a.output.b}").contains("`a`"));
        for bad in [
            "${}",
            "${input.}",
            "${input..a}",
            "${steps.a}",
            "${steps.a.result}",
            "${run}",
            "${run.idempotency_key}",
            "${step.id}",
            "${env.HOME}",
            "x ${input.a",
        ] {
            assert!(references(bad).is_err(), "{bad}");
        }
    }
}
