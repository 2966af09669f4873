#!/usr/bin/env bash
# Lints template.yaml (AWS SAM) twice, as CloudFormation would see it:
#  1. expands the SAM resources with samtranslator (the same library
#     CloudFormation's AWS::Serverless transform runs), CodeUri pointed at a
#     dummy s3:// URI in the copy it reads, since the Rust build is not run;
#  2. runs cfn-lint on the expanded template (plain CloudFormation: IAM,
#     Lambda, event source mapping, API Gateway v2 as deployed), kept in
#     target/check-template/ for cfn-lint's line numbers;
#  3. runs cfn-lint on the raw template (SAM schemas, Globals merged).
# Zero errors and zero warnings are required: a warning that is accepted is
# ignored in the template's Metadata (cfn-lint: config: ignore_checks) with
# its reason beside it. Installs cfn-lint and aws-sam-translator (PyPI) into
# .venv when they are missing. Needs no AWS account and no network once
# installed. Exits non-zero naming the step that failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$1"; }
fail() { printf '\ncheck-template.sh: FAILED: %s\n' "$1" >&2; exit 1; }

venv=.venv
py=$venv/bin/python

step "tools: cfn-lint and aws-sam-translator in $venv"
if ! { [ -x "$venv/bin/cfn-lint" ] && "$py" -c 'import samtranslator' 2>/dev/null; }; then
  if [ ! -x "$py" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
      # Debian's python3 needs python3-venv for `python3 -m venv`.
      if [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv \
          || fail "install python3-venv"
        python3 -m venv "$venv" || fail "create $venv"
      else
        fail "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"
      fi
    fi
    "$venv/bin/pip" install --quiet --upgrade pip || fail "upgrade pip in $venv"
  fi
  "$venv/bin/pip" install --quiet cfn-lint aws-sam-translator \
    || fail "install cfn-lint and aws-sam-translator into $venv"
fi
"$venv/bin/cfn-lint" --version

# The expansion is kept where cfn-lint's line numbers can be looked up.
out=target/check-template
mkdir -p "$out"
expanded=$out/template.expanded.json

step "expand the SAM template with samtranslator"
# samtranslator asks boto3 for a region to fill in the pseudo parameters;
# no AWS call is made.
AWS_DEFAULT_REGION=us-east-1 "$py" - template.yaml "$expanded" <<'PY' || fail "expand template.yaml with samtranslator"
import json
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class MockPolicyLoader:
    """Stands in for ManagedPolicyLoader, which lists AWS managed policies
    through IAM: the template names none (its roles are its own)."""

    def load(self):
        return {}


source, target = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as f:
    template = yaml_parse(f.read())

# `sam build` would replace CodeUri with the built bootstrap; the transform
# only needs a location, so a temporary copy gets a dummy one.
for name, resource in template.get("Resources", {}).items():
    if resource.get("Type") == "AWS::Serverless::Function":
        resource.setdefault("Properties", {})["CodeUri"] = f"s3://check-template/{name}.zip"

expanded = transform(template, {"AWS::Region": "us-east-1"}, MockPolicyLoader())
with open(target, "w", encoding="utf-8") as f:
    json.dump(expanded, f, indent=1, sort_keys=True)
kinds = sorted({r["Type"] for r in expanded["Resources"].values()})
print(f"{len(expanded['Resources'])} CloudFormation resources: {', '.join(kinds)}")
PY

step "the rules AWS documents, on the expanded template"
# What a real account would refuse or stop, which neither cfn-lint nor moto
# knows; each rule names the page it comes from.
"$py" - "$expanded" <<'PY' || fail "a rule AWS documents does not hold (above)"
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    resources = json.load(f)["Resources"]
broken = []

# Lambda Developer Guide, "Recursive loop detection": Lambda stops a chain
# of invocations after 16 hops from one event unless the function says
# RecursiveLoop: Allow. The provisioner re-sends its job to its own queue
# while ElastiCache is busy, for longer than that.
provisioner = resources["ProvisionerFunction"]["Properties"]
if provisioner.get("RecursiveLoop") != "Allow":
    broken.append("ProvisionerFunction must set RecursiveLoop: Allow")

# ElastiCache User Guide, "At-Rest Encryption in ElastiCache": a customer
# managed key is used through elasticache.<region> and dax.<region>; a
# kms:ViaService condition must allow both.
def conditions(node):
    """Every kms:ViaService value anywhere under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "kms:ViaService":
                yield v
            else:
                yield from conditions(v)
    elif isinstance(node, list):
        for v in node:
            yield from conditions(v)

found = list(conditions(resources))
if not found:
    broken.append("no kms:ViaService condition found")
for value in found:
    listed = json.dumps(value)
    for service in ("elasticache.${AWS::Region}.amazonaws.com", "dax.${AWS::Region}.amazonaws.com"):
        if service not in listed:
            broken.append(f"kms:ViaService {listed} must list {service}")

for b in broken:
    print(f"rule broken: {b}")
sys.exit(1 if broken else 0)
PY
echo "RecursiveLoop: Allow on the provisioner; kms:ViaService lists ElastiCache and DAX"

step "cfn-lint on the expanded template"
"$venv/bin/cfn-lint" --format parseable -- "$expanded" \
  || fail "cfn-lint on the expanded template (errors or unjustified warnings above)"
echo "no errors, no warnings"

step "cfn-lint on template.yaml"
"$venv/bin/cfn-lint" --format parseable -- template.yaml \
  || fail "cfn-lint on template.yaml (errors or unjustified warnings above)"
echo "no errors, no warnings"

printf '\ncheck-template.sh: template.yaml passed\n'
