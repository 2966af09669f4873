//! The deploy templates agree with the code: they set exactly the
//! environment the AWS mode reads, and their dashboards chart the metrics
//! it writes. The environment:
//! every variable `template.yaml` (and, once it exists, the Terraform
//! `broker` module) gives a function is one of
//! `broker_aws::config::VARIABLES`, and every one the code
//! requires is given to every function. A text scan, no YAML or HCL
//! parser: the `Variables:` blocks of the SAM template, and the maps the
//! `variables = ...` attributes of the Terraform files write, inline
//! (`variables = { ... }`) or through the locals they merge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use broker_aws::config::{AwsSettings, VARIABLES};

/// Names a template may set beyond `VARIABLES`: only `RUST_LOG`, the log
/// filter `init_tracing` hands to tracing-subscriber's `EnvFilter`, which is
/// not part of the AWS-mode configuration.
const ALSO_ALLOWED: &[&str] = &["RUST_LOG"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A value for every variable that `AwsSettings` accepts.
fn sample(name: &str) -> &'static str {
    match name {
        "BROKER_BACKEND" => "aws",
        "TABLE_NAME" => "osb-broker",
        "QUEUE_URL" => "https://sqs.eu-west-1.amazonaws.com/123456789012/osb-jobs",
        "BROKER_CREDENTIALS_SECRET_ARN" => {
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:BrokerCredentialsSecret-AbCdEf"
        }
        "NAME_PREFIX" => "osb",
        "CACHE_SUBNET_GROUP" => "osb-cache",
        "MEMCACHED_SUBNET_GROUP" => "osb-memcached",
        "CACHE_SECURITY_GROUP_IDS" => "sg-0123,sg-0456",
        "CACHE_SUBNET_IDS" => "subnet-0a1b2c3d,subnet-1a1b2c3d",
        "KMS_KEY_ID" => "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "POLL_DELAY_SECS" => "30",
        "CATALOG_CACHE_SECS" => "60",
        "SECRET_RECOVERY_WINDOW_DAYS" => "7",
        "ROTATION_DAYS" => "30",
        "ROTATION_GRACE_SECS" => "3600",
        "ROTATION_FUNCTION_ARN" => "arn:aws:lambda:eu-west-1:123456789012:function:osb-provisioner",
        "ORPHAN_GRACE_SECS" => "3600",
        "SWEEP_EVERY_SECS" => "3600",
        "ALARM_ACTIONS" => "arn:aws:sns:eu-west-1:123456789012:cache-alarms",
        "CACHE_LOG_RETENTION_DAYS" => "30",
        other => panic!("{other} is in VARIABLES but this test has no sample value for it: add one"),
    }
}

fn parses_without(missing: &str) -> Result<AwsSettings, String> {
    AwsSettings::from_lookup(|k| (k != missing).then(|| sample(k).to_string()))
}

/// The variables the code refuses to start without, found by leaving each
/// one out of a complete environment in turn.
fn required() -> BTreeSet<&'static str> {
    VARIABLES.iter().copied().filter(|name| parses_without(name).is_err()).collect()
}

fn allowed() -> BTreeSet<&'static str> {
    VARIABLES.iter().chain(ALSO_ALLOWED).copied().collect()
}

// ---------------------------------------------------------------- SAM

/// The environment keys the SAM template gives its functions: the
/// `Globals.Function` block, which every function gets, and each
/// `AWS::Serverless::Function`'s own block.
#[derive(Debug, Default)]
struct SamEnvironment {
    globals: BTreeSet<String>,
    functions: BTreeMap<String, BTreeSet<String>>,
    /// Every `Variables:` block, by its path, with its keys.
    blocks: Vec<(String, BTreeSet<String>)>,
}

/// `key:` at the start of a (trimmed, dash-stripped) line, and what follows.
fn mapping_key(text: &str) -> Option<(&str, &str)> {
    let (key, rest) = text.split_once(':')?;
    let simple = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    (simple && (rest.is_empty() || rest.starts_with(' '))).then(|| (key, rest.trim()))
}

fn sam_environment(text: &str) -> SamEnvironment {
    let mut env = SamEnvironment::default();
    // The open mapping keys above the current line: (indentation, key).
    let mut stack: Vec<(usize, String)> = Vec::new();
    // Lines of a block scalar (`|`, `>-` ...) belong to the key above them.
    let mut scalar_above: Option<usize> = None;
    let mut blocks: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut function_types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = line.len() - trimmed.len();
        if let Some(limit) = scalar_above {
            if indent > limit {
                continue;
            }
            scalar_above = None;
        }
        let mut content = trimmed;
        while let Some(rest) = content.strip_prefix("- ") {
            indent += 2;
            content = rest.trim_start();
        }
        let Some((key, value)) = mapping_key(content) else { continue };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        if path.ends_with(&["Environment", "Variables"]) {
            blocks.entry(path.join(".")).or_default().insert(key.to_string());
        }
        if let ["Resources", name] = path.as_slice()
            && key == "Type"
        {
            function_types.insert(name.to_string(), value.to_string());
        }
        if value.starts_with('|') || value.starts_with('>') {
            scalar_above = Some(indent);
        }
        stack.push((indent, key.to_string()));
    }
    for (path, keys) in &blocks {
        let parts: Vec<&str> = path.split('.').collect();
        match parts.as_slice() {
            ["Globals", "Function", "Environment", "Variables"] => env.globals.extend(keys.iter().cloned()),
            ["Resources", name, "Properties", "Environment", "Variables"] => {
                env.functions.entry(name.to_string()).or_default().extend(keys.iter().cloned());
            }
            _ => panic!("template.yaml: a Variables block at {path} is neither in Globals nor a function's"),
        }
    }
    for (name, kind) in function_types {
        if kind == "AWS::Serverless::Function" {
            env.functions.entry(name).or_default();
        }
    }
    env.blocks = blocks.into_iter().collect();
    env
}

fn template() -> SamEnvironment {
    sam_environment(&read(&root().join("template.yaml")))
}

// ---------------------------------------------------------------- Terraform

/// What one HCL expression contributes to a map: the keys it writes itself
/// and the locals it takes whole (`merge(local.common, { A = 1 })`), but
/// nothing inside a key's value (`A = merge({ B = 1 })` sets A, not B).
#[derive(Debug, Default)]
struct Expression {
    keys: BTreeSet<String>,
    locals: Vec<String>,
    /// Where the expression ends: the first line end outside any bracket.
    end: usize,
}

/// The end of the string literal opening at `i`, past `${ ... }`
/// interpolations that hold strings of their own.
fn skip_string(src: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < src.len() {
        match src[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            b'$' if src.get(i + 1) == Some(&b'{') => {
                let mut depth = 1;
                i += 2;
                while i < src.len() && depth > 0 {
                    match src[i] {
                        b'"' => i = skip_string(src, i),
                        c => {
                            depth += i32::from(c == b'{') - i32::from(c == b'}');
                            i += 1;
                        }
                    }
                }
            }
            _ => i += 1,
        }
    }
    i
}

/// The end of the comment opening at `i` (`#` and `//` stop before the line
/// end), or `i` when none opens there.
fn skip_comment(src: &[u8], i: usize) -> usize {
    let rest = &src[i..];
    if rest.starts_with(b"#") || rest.starts_with(b"//") {
        i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
    } else if rest.starts_with(b"/*") {
        i + rest.windows(2).position(|w| w == b"*/").map_or(rest.len(), |p| p + 2)
    } else {
        i
    }
}

/// `=` of an attribute or map key at `i` (after blanks), not `==` or `=>`.
fn assignment_at(src: &[u8], mut i: usize) -> Option<usize> {
    while matches!(src.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    (src.get(i) == Some(&b'=') && !matches!(src.get(i + 1), Some(b'=' | b'>'))).then_some(i + 1)
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// Scans the expression that starts at `start` (just after an `=`).
fn scan_expression(src: &[u8], start: usize) -> Expression {
    let mut out = Expression::default();
    // Open brackets, each with whether a key's value is being read in it.
    let mut frames: Vec<(u8, bool)> = Vec::new();
    let mut seen = false;
    let mut i = start;
    while i < src.len() {
        let skipped = skip_comment(src, i);
        if skipped != i {
            i = skipped;
            continue;
        }
        let outside_values = frames.iter().all(|(_, in_value)| !in_value);
        let in_map = frames.last().is_some_and(|(open, _)| *open == b'{');
        match src[i] {
            b'"' => {
                let end = skip_string(src, i);
                let key = String::from_utf8_lossy(&src[i + 1..end.saturating_sub(1)]).into_owned();
                seen = true;
                i = end;
                if in_map && let Some(after) = assignment_at(src, i) {
                    if outside_values {
                        out.keys.insert(key);
                    }
                    frames.last_mut().unwrap().1 = true;
                    i = after;
                }
            }
            b'{' | b'(' | b'[' => {
                frames.push((src[i], false));
                seen = true;
                i += 1;
            }
            b'}' | b')' | b']' => {
                frames.pop();
                i += 1;
            }
            b'\n' | b',' => {
                match frames.last_mut() {
                    Some(frame) => frame.1 = false,
                    None if src[i] == b'\n' && seen => break,
                    None => {}
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = i + src[i..].iter().position(|&c| !is_word(c)).unwrap_or(src.len() - i);
                let word = std::str::from_utf8(&src[i..end]).unwrap();
                seen = true;
                i = end;
                if let Some(local) = word.strip_prefix("local.") {
                    if outside_values {
                        out.locals.push(local.split('.').next().unwrap().to_string());
                    }
                } else if in_map
                    && !word.contains('.')
                    && let Some(after) = assignment_at(src, i)
                {
                    if outside_values {
                        out.keys.insert(word.to_string());
                    }
                    frames.last_mut().unwrap().1 = true;
                    i = after;
                }
            }
            _ => i += 1,
        }
    }
    out.end = i;
    out
}

/// Every attribute `name = ...` written directly in `block {` blocks of
/// `src` (`locals`, say), with where its expression starts.
fn block_attributes(src: &[u8], block: &str) -> Vec<(String, usize)> {
    let text = std::str::from_utf8(src).unwrap();
    let mut found = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let opens = line.trim_start().strip_prefix(block).is_some_and(|rest| rest.trim() == "{");
        let line_start = offset;
        offset += line.len();
        if !opens {
            continue;
        }
        let mut i = line_start + line.find('{').unwrap() + 1;
        loop {
            while i < src.len() && src[i].is_ascii_whitespace() {
                i += 1;
            }
            let skipped = skip_comment(src, i);
            if skipped != i {
                i = skipped;
                continue;
            }
            if i >= src.len() || src[i] == b'}' {
                break;
            }
            let end = i + src[i..].iter().position(|&c| !is_word(c)).unwrap_or(src.len() - i);
            let name = String::from_utf8_lossy(&src[i..end]).into_owned();
            let Some(after) = assignment_at(src, end) else {
                panic!("a `{block}` block holds something other than attributes near `{name}`")
            };
            found.push((name, after));
            i = scan_expression(src, after).end;
        }
    }
    found
}

/// The environment maps of the Terraform module in `dir`: for every
/// `variables = ...` attribute of its `*.tf` files (the `environment` block of
/// a function), the keys it sets, following the locals it merges in.
fn terraform_maps(dir: &Path) -> Vec<(String, BTreeSet<String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    files.sort();
    let sources: Vec<(PathBuf, Vec<u8>)> =
        files.into_iter().map(|f| (f.clone(), read(&f).into_bytes())).collect();
    let mut locals: BTreeMap<String, Expression> = BTreeMap::new();
    for (_, src) in &sources {
        for (name, start) in block_attributes(src, "locals") {
            locals.insert(name, scan_expression(src, start));
        }
    }
    fn resolve(
        e: &Expression,
        locals: &BTreeMap<String, Expression>,
        path: &mut Vec<String>,
    ) -> BTreeSet<String> {
        let mut keys = e.keys.clone();
        for name in &e.locals {
            assert!(!path.contains(name), "the locals {path:?} refer to each other in a loop");
            let local = locals.get(name).unwrap_or_else(|| panic!("local.{name} is used but never defined"));
            path.push(name.clone());
            keys.extend(resolve(local, locals, path));
            path.pop();
        }
        keys
    }
    let mut maps = Vec::new();
    for (file, src) in &sources {
        let text = std::str::from_utf8(src).unwrap();
        let mut offset = 0;
        for (n, line) in text.split_inclusive('\n').enumerate() {
            let line_start = offset;
            offset += line.len();
            let indent = line.len() - line.trim_start().len();
            if !line.trim_start().starts_with("variables") {
                continue;
            }
            let Some(start) = assignment_at(src, line_start + indent + "variables".len()) else { continue };
            let expression = scan_expression(src, start);
            let keys = resolve(&expression, &locals, &mut Vec::new());
            maps.push((format!("{}:{}", file.display(), n + 1), keys));
        }
    }
    maps
}

// ---------------------------------------------------------------- tests

#[test]
fn the_sample_environment_is_complete_so_the_required_set_is_what_the_code_requires() {
    let complete = AwsSettings::from_lookup(|k| Some(sample(k).to_string()));
    assert!(complete.is_ok(), "{complete:?}");
    let required = required();
    for name in ["TABLE_NAME", "QUEUE_URL", "BROKER_CREDENTIALS_SECRET_ARN", "NAME_PREFIX"] {
        assert!(required.contains(name), "{name} should be required: {required:?}");
    }
    for name in ["KMS_KEY_ID", "MEMCACHED_SUBNET_GROUP", "POLL_DELAY_SECS"] {
        assert!(!required.contains(name), "{name} has a default: {required:?}");
    }
}

#[test]
fn the_template_gives_its_functions_an_environment() {
    let env = template();
    assert!(!env.blocks.is_empty(), "template.yaml has no Variables block");
    assert_eq!(
        env.functions.keys().map(String::as_str).collect::<Vec<_>>(),
        ["BrokerApiFunction", "ProvisionerFunction"],
        "the functions the scan found"
    );
}

#[test]
fn every_variable_the_template_sets_is_one_the_code_reads() {
    let allowed = allowed();
    for (path, keys) in template().blocks {
        let unread: Vec<&String> = keys.iter().filter(|k| !allowed.contains(k.as_str())).collect();
        assert!(
            unread.is_empty(),
            "template.yaml {path} sets {unread:?}, which the code never reads (VARIABLES in shared/src/adapters/aws/config.rs)"
        );
    }
}

#[test]
fn every_function_in_the_template_gets_every_required_variable() {
    let env = template();
    for (function, own) in &env.functions {
        let has: BTreeSet<&str> = env.globals.iter().chain(own).map(String::as_str).collect();
        let missing: Vec<&str> = required().into_iter().filter(|k| !has.contains(k)).collect();
        assert!(missing.is_empty(), "template.yaml: {function} lacks the required {missing:?}");
    }
}

/// What `broker_lambda::rotation_policy` derives the rotation policy from.
/// Without `ROTATION_FUNCTION_ARN` it is "no schedule", so a function that
/// lacks it disagrees with one that has it: broker-api then answers binds
/// without `metadata.renew_before` while the provisioner rotates on a
/// schedule.
const ROTATION_POLICY: [&str; 3] = ["ROTATION_DAYS", "ROTATION_GRACE_SECS", "ROTATION_FUNCTION_ARN"];

#[test]
fn every_function_in_the_template_gets_what_its_rotation_policy_is_derived_from() {
    let env = template();
    for (function, own) in &env.functions {
        let has: BTreeSet<&str> = env.globals.iter().chain(own).map(String::as_str).collect();
        let missing: Vec<&str> = ROTATION_POLICY.into_iter().filter(|k| !has.contains(k)).collect();
        assert!(missing.is_empty(), "template.yaml: {function} lacks {missing:?}");
    }
}

#[test]
fn every_variables_map_of_the_terraform_broker_module_gives_what_the_rotation_policy_is_derived_from() {
    let maps = terraform_maps(&root().join("terraform/modules/broker"));
    assert_eq!(maps.len(), 2, "one map per function: {maps:?}");
    for (at, keys) in maps {
        let missing: Vec<&str> = ROTATION_POLICY.into_iter().filter(|k| !keys.contains(*k)).collect();
        assert!(missing.is_empty(), "{at} lacks {missing:?}");
    }
}

#[test]
fn the_template_selects_the_aws_backend() {
    let text = read(&root().join("template.yaml"));
    assert!(
        text.lines().any(|l| l.trim() == "BROKER_BACKEND: aws"),
        "template.yaml must set BROKER_BACKEND: aws, or the functions start in laptop mode"
    );
}

#[test]
fn every_variables_map_of_the_terraform_broker_module_sets_only_what_the_code_reads_and_all_it_requires() {
    let dir = root().join("terraform/modules/broker");
    if !dir.is_dir() {
        eprintln!("{} does not exist yet: nothing to compare", dir.display());
        return;
    }
    let maps = terraform_maps(&dir);
    assert!(
        !maps.is_empty(),
        "{} has no `variables = ...` attribute: its functions would get no environment",
        dir.display()
    );
    let (allowed, required) = (allowed(), required());
    for (at, keys) in maps {
        let unread: Vec<&String> = keys.iter().filter(|k| !allowed.contains(k.as_str())).collect();
        assert!(unread.is_empty(), "{at} sets {unread:?}, which the code never reads");
        let missing: Vec<&str> = required.iter().copied().filter(|k| !keys.contains(*k)).collect();
        assert!(missing.is_empty(), "{at} lacks the required {missing:?}");
    }
}

#[test]
fn the_scanners_read_nested_blocks_and_maps_as_intended() {
    let sam = "Globals:\n  Function:\n    Environment:\n      Variables:\n        A: x\n        B: !Ref Y\n\
               Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n      Description: >-\n\
               \x20       Variables: not a key\n      Environment:\n        Variables:\n          C: !If [c, d, e]\n\
               \x20     Policies:\n        - Statement:\n            - Effect: Allow\n";
    let env = sam_environment(sam);
    assert_eq!(env.globals, BTreeSet::from(["A".to_string(), "B".to_string()]));
    assert_eq!(env.functions["Fn"], BTreeSet::from(["C".to_string()]));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.tf"),
        r#"locals {
  # the maps every function shares
  common = merge(
    {
      A = "x"
      "B" = "${join(",", [var.b, "}"])}"
      D = merge({ E = 1 }, local.not_a_map_of_ours)
    },
    var.c == null ? {} : { C = tostring(var.c) },
  )
  api = merge(local.common, { F = 1 })
  not_a_map_of_ours = { G = 1 }
  plain = 6 * var.timeout
}
resource "aws_lambda_function" "api" {
  environment {
    variables = local.api
  }
}
resource "aws_lambda_function" "inline" {
  environment {
    variables = {
      H = "y" # I = 1
      // J = 1
    }
  }
}
"#,
    )
    .unwrap();
    let maps = terraform_maps(dir.path());
    let keys: Vec<Vec<&str>> = maps.iter().map(|(_, k)| k.iter().map(String::as_str).collect()).collect();
    assert_eq!(keys, [vec!["A", "B", "C", "D", "F"], vec!["H"]]);
}

// ---------------------------------------------------------------- packages

/// The architecture a Terraform example root deploys: its
/// `terraform.tfvars.example` value, else its variable's default.
fn example_architecture(example: &str) -> String {
    let dir = root().join("terraform/examples").join(example);
    let value_of = |text: &str, key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    if let Some(arch) = value_of(&read(&dir.join("terraform.tfvars.example")), "architecture") {
        return arch;
    }
    let variables = read(&dir.join("variables.tf"));
    let block = variables.split("variable \"architecture\"").nth(1).expect("an architecture variable");
    value_of(block, "default").expect("a default architecture")
}

/// Lambda runs a package only on the architecture it was built for (an
/// arm64 `bootstrap` on x86_64 fails every invocation with an exec format
/// error): each example root takes its packages from the folder of its own
/// architecture, and terraform/README.md builds every architecture a root
/// uses into that folder, with `--arm64` exactly for arm64.
#[test]
fn each_terraform_example_deploys_the_packages_built_for_its_architecture() {
    let readme = read(&root().join("terraform/README.md"));
    for example in ["eu-west-1", "us-east-1"] {
        let main = read(&root().join("terraform/examples").join(example).join("main.tf"));
        for function in ["broker-api", "provisioner"] {
            let path = format!("\"${{var.lambda_dir}}/${{var.architecture}}/{function}/bootstrap.zip\"");
            assert!(main.contains(&path), "{example}: {function}'s package is not taken from {path}");
        }
        assert!(
            main.contains("broker_api_zip  = local.broker_api_zip")
                && main.contains("provisioner_zip = local.provisioner_zip"),
            "{example}: the broker module must get the architecture's packages"
        );
        let arch = example_architecture(example);
        let build = readme
            .lines()
            .find(|l| {
                l.contains("cargo lambda build") && l.contains(&format!("--lambda-dir target/lambda/{arch} "))
            })
            .or_else(|| {
                readme.lines().find(|l| {
                    l.contains("cargo lambda build")
                        && l.trim_end().ends_with(&format!("--lambda-dir target/lambda/{arch}"))
                })
            })
            .unwrap_or_else(|| {
                panic!("{example} deploys {arch}, but terraform/README.md builds no {arch} packages")
            });
        assert_eq!(build.contains("--arm64"), arch == "arm64", "{example} ({arch}): {build}");
    }
}

/// The Terraform roots that deploy a whole broker and the SAM template do
/// not share a default prefix: the same prefix would give both a function
/// `<prefix>-provisioner` and the secrets under `<prefix>/`.
#[test]
fn the_terraform_brokers_default_prefix_is_not_the_sam_templates() {
    let template = read(&root().join("template.yaml"));
    let block = template.split("  NamePrefix:").nth(1).expect("a NamePrefix parameter");
    let sam = block.lines().find_map(|l| l.trim().strip_prefix("Default:")).expect("a default").trim();
    for example in ["eu-west-1", "us-east-1"] {
        let variables = read(&root().join("terraform/examples").join(example).join("variables.tf"));
        let block = variables.split("variable \"name_prefix\"").nth(1).expect("a name_prefix variable");
        let tf = block
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("default")
                    .map(|v| v.trim_start_matches([' ', '=']).trim().trim_matches('"'))
            })
            .expect("a default prefix");
        assert_ne!(tf, sam, "{example}");
        assert!(
            !tf.starts_with(&format!("{sam}-")) && !sam.starts_with(&format!("{tf}-")),
            "{tf} and {sam} overlap"
        );
    }
}

/// The lines of template.yaml's resource `name`: from `  name:` to the next
/// resource at the same indent.
fn sam_resource(text: &str, name: &str) -> Vec<String> {
    let head = format!("  {name}:");
    let mut lines = text.lines().skip_while(|l| *l != head);
    let first = lines.next().unwrap_or_else(|| panic!("template.yaml has no resource {name}"));
    std::iter::once(first)
        .chain(
            lines.take_while(|l| {
                !(l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
            }),
        )
        .map(str::to_string)
        .collect()
}

/// broker-api returns binding passwords; it never needs an instance's
/// admin password or AUTH token, so its role names only the binding
/// secrets (a binding's own, a claimed spare's) besides its credentials.
#[test]
fn broker_api_may_read_binding_secrets_but_no_admin_secret() {
    let role = sam_resource(&read(&root().join("template.yaml")), "BrokerApiRole");
    let secrets: Vec<&str> = role.iter().map(|l| l.trim()).filter(|l| l.contains(":secret:")).collect();
    assert_eq!(secrets.len(), 2, "{secrets:?}");
    for line in secrets {
        assert!(
            line.ends_with("/instances/*/bindings/*") || line.ends_with("/instances/*/spares/*"),
            "broker-api's role names {line}, which covers more than binding secrets"
        );
    }
}

/// The ElastiCache API reference, DeleteReplicationGroup: "CreateSnapshot
/// permission is required to create a final snapshot. Without this
/// permission, the API call will fail with an Access Denied exception." A
/// plan with final snapshots could otherwise never be deprovisioned.
#[test]
fn the_provisioner_may_take_the_final_snapshot_a_delete_asks_for() {
    let role = sam_resource(&read(&root().join("template.yaml")), "ProvisionerRole").join("\n");
    let at =
        role.find("- elasticache:CreateSnapshot\n").expect("the provisioner's role grants CreateSnapshot");
    let resources = &role[at..role[at..].find("- Sid:").map_or(role.len(), |n| at + n)];
    assert!(resources.contains(":replicationgroup:${NamePrefix}-*"), "{resources}");
    // Final snapshots (`-final-`), the `snapshot` parameter's (`-s-`) and
    // an orphaned group's (`-orphan`): every one the broker names.
    assert!(resources.contains(":snapshot:${NamePrefix}-*\n"), "{resources}");
}

/// The HTTP API throttles before broker-api, as the Terraform module's stage
/// does (api_throttling_rate_limit, api_throttling_burst_limit).
#[test]
fn the_http_api_throttles_what_reaches_broker_api() {
    let api = sam_resource(&read(&root().join("template.yaml")), "BrokerHttpApi").join("\n");
    assert!(api.contains("ThrottlingRateLimit: !Ref ApiThrottlingRateLimit"), "{api}");
    assert!(api.contains("ThrottlingBurstLimit: !Ref ApiThrottlingBurstLimit"), "{api}");
}

/// Every AWS operation the provisioner's providers send, as IAM spells it:
/// `.client.op()` or `.rbac.op()` in `shared/aws/src/elasticache` (tests
/// left out) is ElastiCache's (`create_user_group` is
/// `elasticache:CreateUserGroup`), `logs.client.op()` there CloudWatch
/// Logs', and `.client.op()` in `shared/aws/src/cloudwatch.rs` CloudWatch's.
fn provider_operations() -> BTreeSet<String> {
    let dir = root().join("shared/aws/src/elasticache");
    let mut files: Vec<(PathBuf, &str)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| (e.unwrap().path(), "elasticache"))
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.push((root().join("shared/aws/src/cloudwatch.rs"), "cloudwatch"));
    sent_operations(&files)
}

/// The operations `.client.op()` and `.rbac.op()` in `files` send, and
/// `.client_for(arn).op()` (the client a resource's calls go through), each
/// file's own tests left out, as IAM spells them under the file's service.
fn sent_operations(files: &[(PathBuf, &str)]) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, service) in files {
        let text: String = read(path).chars().filter(|c| !c.is_whitespace()).collect();
        let text = text.split("#[cfg(test)]modtests{").next().unwrap_or_default();
        // Where each call's operation name starts, with the text before the client.
        let mut calls: Vec<(usize, usize)> = Vec::new();
        for client in [".client.", ".rbac."] {
            calls.extend(text.match_indices(client).map(|(at, _)| (at, at + client.len())));
        }
        for (at, _) in text.match_indices(".client_for(") {
            // Past the argument's parentheses, to the `.` of the call.
            let mut depth = 0;
            let close = text[at..].char_indices().find_map(|(i, c)| {
                depth += i32::from(c == '(') - i32::from(c == ')');
                (c == ')' && depth == 0).then_some(at + i)
            });
            if let Some(close) = close
                && text[close + 1..].starts_with('.')
            {
                calls.push((at, close + 2));
            }
        }
        for (at, start) in calls {
            let rest = &text[start..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if name.is_empty() || name == "clone" || !rest[name.len()..].starts_with("()") {
                continue;
            }
            let service = if text[..at].ends_with("logs") { "logs" } else { *service };
            let pascal: String = name.split('_').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect();
            ops.insert(format!("{service}:{pascal}"));
        }
    }
    ops
}

/// A call the role does not allow fails in AWS with AccessDenied, which
/// nothing short of a real account shows: so every operation the provider
/// sends is granted to the provisioner in both templates.
#[test]
fn the_provisioner_may_send_every_call_its_providers_make() {
    let ops = provider_operations();
    for op in [
        "elasticache:CreateReplicationGroup",
        "elasticache:DescribeUserGroups",
        // Through `client_for`, which picks a serverless cache's client.
        "elasticache:ListTagsForResource",
        "elasticache:AddTagsToResource",
        "elasticache:CreateServerlessCache",
        "elasticache:ModifyUser",
        "logs:CreateLogGroup",
        "logs:DeleteLogGroup",
        "cloudwatch:PutMetricAlarm",
        "cloudwatch:DescribeAlarms",
    ] {
        assert!(ops.contains(op), "the scan finds {op}: {ops:?}");
    }
    let sam = sam_resource(&read(&root().join("template.yaml")), "ProvisionerRole").join("\n");
    let terraform = read(&root().join("terraform/modules/broker/iam.tf"));
    for op in &ops {
        assert!(sam.contains(&format!("- {op}\n")), "template.yaml's ProvisionerRole does not allow {op}");
        assert!(
            terraform.contains(&format!("\"{op}\"")),
            "the Terraform provisioner role does not allow {op}"
        );
    }
}

/// The `broker_api_policy` of the Terraform module's iam.tf.
fn terraform_broker_api_policy() -> String {
    let terraform = read(&root().join("terraform/modules/broker/iam.tf"));
    terraform
        .split("broker_api_policy = {")
        .nth(1)
        .and_then(|rest| rest.split("provisioner_policy = {").next())
        .expect("iam.tf has a broker_api_policy before the provisioner_policy")
        .to_string()
}

/// The dashboard page's charts read CloudWatch from broker-api (the calls
/// of `shared/aws/src/cloudwatch/charts.rs`): its role allows each of them
/// in both templates.
#[test]
fn broker_api_may_read_the_metrics_its_dashboard_charts() {
    let ops = sent_operations(&[(root().join("shared/aws/src/cloudwatch/charts.rs"), "cloudwatch")]);
    assert!(ops.contains("cloudwatch:GetMetricData"), "the scan finds GetMetricData: {ops:?}");
    let sam = sam_resource(&read(&root().join("template.yaml")), "BrokerApiRole").join("\n");
    let api = terraform_broker_api_policy();
    for op in &ops {
        assert!(
            sam.contains(&format!("Action: {op}\n")) || sam.contains(&format!("- {op}\n")),
            "template.yaml's BrokerApiRole does not allow {op}"
        );
        assert!(api.contains(&format!("\"{op}\"")), "the Terraform broker-api role does not allow {op}");
    }
}

/// Fetching an instance lists its snapshots, and a restore or a snapshot
/// action checks a name, from broker-api (`Broker::snapshot_views` and
/// friends call the provider's `snapshots`, DescribeSnapshots, and
/// DescribeServerlessCacheSnapshots for a serverless cache's); a fetch
/// binding finds a serverless cache's endpoint with DescribeServerlessCaches:
/// its role allows the calls in both templates.
#[test]
fn broker_api_may_list_the_snapshots_it_shows_and_checks() {
    let day2 = read(&root().join("shared/aws/src/elasticache/day2.rs"));
    assert!(day2.contains(".describe_snapshots()"), "the provider lists snapshots with DescribeSnapshots");
    let serverless = read(&root().join("shared/aws/src/elasticache/serverless.rs"));
    for call in [".describe_serverless_caches()", ".describe_serverless_cache_snapshots()"] {
        assert!(serverless.contains(call), "the provider calls {call} for serverless caches");
    }
    let sam = sam_resource(&read(&root().join("template.yaml")), "BrokerApiRole").join("\n");
    let api = terraform_broker_api_policy();
    for op in [
        "elasticache:DescribeSnapshots",
        "elasticache:DescribeServerlessCaches",
        "elasticache:DescribeServerlessCacheSnapshots",
    ] {
        assert!(
            sam.contains(&format!("Action: {op}\n")) || sam.contains(&format!("- {op}\n")),
            "template.yaml's BrokerApiRole does not allow {op}"
        );
        assert!(api.contains(&format!("\"{op}\"")), "the Terraform broker-api role does not allow {op}");
    }
}

/// CreateServerlessCache makes the cache's VPC endpoint with the caller's
/// permissions (AmazonElastiCacheFullAccess grants them for it): without
/// ec2:CreateVpcEndpoint, limited to ElastiCache Serverless's endpoint
/// services, and ec2:CreateTags on creation, every serverless create is
/// refused, which nothing short of a real account shows. Both templates give
/// the provisioner that, and the subnets (`CACHE_SUBNET_IDS`) the endpoint
/// goes in.
#[test]
fn the_provisioner_may_make_a_serverless_caches_vpc_endpoint() {
    let serverless = read(&root().join("shared/aws/src/elasticache/serverless.rs"));
    assert!(serverless.contains(".create_serverless_cache()"), "the provider creates serverless caches");
    let template = read(&root().join("template.yaml"));
    let sam = sam_resource(&template, "ProvisionerRole").join("\n");
    let terraform = read(&root().join("terraform/modules/broker/iam.tf"));
    for op in [
        "ec2:CreateVpcEndpoint",
        "ec2:CreateTags",
        "ec2:DescribeVpcs",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
    ] {
        assert!(sam.contains(op), "template.yaml's ProvisionerRole does not allow {op}");
        assert!(
            terraform.contains(&format!("\"{op}\"")),
            "the Terraform provisioner role does not allow {op}"
        );
    }
    let service = "com.amazonaws.elasticache.serverless.*";
    assert!(sam.contains(&format!("ec2:VpceServiceName: {service}\n")), "template.yaml: {service}");
    assert!(terraform.contains(&format!("\"ec2:VpceServiceName\" = \"{service}\"")), "iam.tf: {service}");
    for (text, tag) in [
        (sam.as_str(), "aws:RequestTag/AmazonElastiCacheManaged: \"true\""),
        (terraform.as_str(), "\"aws:RequestTag/AmazonElastiCacheManaged\" = \"true\""),
    ] {
        assert!(text.contains(tag), "CreateTags must be limited to ElastiCache's tag on creation: {tag}");
    }
    assert!(
        sam_environment(&template).globals.contains("CACHE_SUBNET_IDS"),
        "template.yaml must give both functions CACHE_SUBNET_IDS"
    );
    let maps = terraform_maps(&root().join("terraform/modules/broker"));
    assert!(
        maps.iter().any(|(_, keys)| keys.contains("CACHE_SUBNET_IDS")),
        "the Terraform module must give the provisioner CACHE_SUBNET_IDS: {maps:?}"
    );
}

/// The `DashboardBody` block of template.yaml, de-indented: the lines after
/// `DashboardBody: !Sub` / `- |` that are indented deeper than the `- |`.
fn sam_dashboard_body(text: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != "DashboardBody: !Sub");
    lines.next().expect("template.yaml has a DashboardBody: !Sub");
    let marker = lines.next().expect("a line after DashboardBody");
    assert_eq!(marker.trim(), "- |", "the body is a literal block");
    let depth = marker.len() - marker.trim_start().len() + 2;
    let mut body = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < depth {
            break;
        }
        body.push_str(line.get(depth..).unwrap_or(""));
        body.push('\n');
    }
    body
}

/// Both templates deploy the same dashboard, and it charts what the code
/// writes: the Embedded Metric Format namespace and metric names of
/// `broker_aws::emf`, each placeholder being one the templates fill in.
#[test]
fn both_templates_deploy_one_dashboard_of_the_metrics_the_code_writes() {
    let terraform = read(&root().join("terraform/modules/broker/dashboard.json.tftpl"));
    let sam = sam_dashboard_body(&read(&root().join("template.yaml")));
    assert_eq!(
        sam.trim_end(),
        terraform.trim_end(),
        "template.yaml's DashboardBody and dashboard.json.tftpl differ"
    );

    let placeholders =
        ["region", "name_prefix", "api_function", "provisioner_function", "job_queue", "dead_letter_queue"];
    let mut filled = terraform.clone();
    for p in placeholders {
        assert!(filled.contains(&format!("${{{p}}}")), "the dashboard uses ${{{p}}}");
        filled = filled.replace(&format!("${{{p}}}"), "x");
    }
    assert!(!filled.contains("${"), "every placeholder is one the templates fill in: {filled}");
    let dashboard: serde_json::Value = serde_json::from_str(&filled).expect("the dashboard body is JSON");
    let text = dashboard.to_string();
    assert!(text.contains(broker_aws::emf::NAMESPACE), "the dashboard charts the broker's namespace");
    for metric in broker_aws::emf::METRICS {
        // A metric is a string of its own, or a quoted name inside a SEARCH.
        let charted = text.contains(&format!("\"{metric}\"")) || text.contains(&format!("\\\"{metric}\\\""));
        assert!(charted, "the dashboard charts {metric}");
    }
    let tf = read(&root().join("terraform/modules/broker/main.tf"));
    for p in placeholders {
        assert!(tf.contains(&format!("    {p} ")), "main.tf fills in {p}");
        assert!(
            read(&root().join("template.yaml")).contains(&format!(" {p}: ")),
            "template.yaml fills in {p}"
        );
    }
}
