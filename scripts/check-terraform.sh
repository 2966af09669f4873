#!/usr/bin/env bash
# Checks terraform/ offline: formatting, `terraform init -backend=false` and
# `terraform validate` of every module and example, `terraform test` (mocked
# AWS provider) of every module, and checkov's security checks.
#
# Terraform runs from a provider mirror only (a directory named tf-plugins
# holding registry.terraform.io/hashicorp/aws; TF_PLUGIN_MIRROR=DIR names
# another), through a CLI configuration written to a temporary directory:
# nothing is downloaded and no backend is touched. Without terraform or the
# mirror it prints one line saying what is missing and exits 0, so the rest of
# the test suite still runs. Otherwise it exits non-zero at the first failing
# step, naming it. checkov is installed into .venv when it is not there yet.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

step() { printf '\n==> %s\n' "$1"; }
fail() { printf '\ncheck-terraform.sh: FAILED: %s\n' "$1" >&2; exit 1; }

# ------------------------------------------------------------ prerequisites

if ! command -v terraform >/dev/null 2>&1; then
  echo "check-terraform.sh: skipped: terraform is not on PATH (install Terraform 1.11 or later: https://developer.hashicorp.com/terraform/install)"
  exit 0
fi
tf_version=$(terraform version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([0-9.]*\).*/\1/p')
if [ -z "$tf_version" ] || [ "$(printf '%s\n' 1.11.0 "$tf_version" | sort -V | head -n1)" != 1.11.0 ]; then
  echo "check-terraform.sh: skipped: terraform ${tf_version:-of unknown version} is older than 1.11, which the modules need (write-only arguments): install 1.11 or later from https://developer.hashicorp.com/terraform/install"
  exit 0
fi

mirror=${TF_PLUGIN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(find / -maxdepth 3 -type d -name tf-plugins 2>/dev/null | head -n1 || true)
fi
if [ -z "$mirror" ] || [ ! -d "$mirror/registry.terraform.io/hashicorp/aws" ]; then
  echo "check-terraform.sh: skipped: no provider mirror with hashicorp/aws (a directory named tf-plugins, or TF_PLUGIN_MIRROR=DIR; make one on a connected machine with: terraform -chdir=terraform/examples/eu-west-1 providers mirror DIR)"
  exit 0
fi

# ------------------------------------------------------------ offline CLI configuration

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/offline.tfrc" <<EOF
disable_checkpoint = true

provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/*/*"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
EOF
export TF_CLI_CONFIG_FILE="$work/offline.tfrc"
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
echo "terraform $tf_version, providers from $mirror (offline)"

# Runs a command quietly; on failure prints its output and stops, naming the step.
quiet() {
  local what=$1; shift
  if ! "$@" >"$work/out" 2>&1; then
    cat "$work/out" >&2
    fail "$what"
  fi
}

modules=(terraform/modules/network terraform/modules/broker)
examples=(terraform/examples/eu-west-1 terraform/examples/us-east-1 terraform/examples/network-only)

step "formatting: terraform fmt -check -recursive terraform"
terraform fmt -check -recursive -diff terraform || fail "formatting (run: terraform fmt -recursive terraform)"

for dir in "${modules[@]}" "${examples[@]}"; do
  step "init and validate: $dir"
  quiet "terraform init in $dir" terraform -chdir="$dir" init -backend=false -input=false -no-color
  terraform -chdir="$dir" validate -no-color || fail "terraform validate in $dir"
done

for dir in "${modules[@]}"; do
  step "tests: terraform test in $dir"
  terraform -chdir="$dir" test -no-color || fail "terraform test in $dir"
done

# ------------------------------------------------------------ checkov

checkov=.venv/bin/checkov
if [ ! -x "$checkov" ]; then
  step "install checkov into .venv"
  if [ ! -x .venv/bin/pip ]; then
    python3 -m venv .venv || fail "install checkov: python3 -m venv .venv failed (apt-get install python3-venv)"
  fi
  quiet "install checkov (.venv/bin/pip install checkov)" .venv/bin/pip install --quiet checkov
fi

step "security checks: checkov -d terraform --skip-download --quiet"
set +e
"$checkov" -d terraform --skip-download --quiet 2>&1 | tee "$work/checkov"
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || fail "checkov (a failed check: fix it, or skip it with a #checkov:skip=CKV_...: reason comment in the resource)"
# checkov passes files it cannot parse, whose resources it then never checks.
if grep -Eq 'Parsing errors: [1-9]' "$work/checkov"; then
  "$checkov" -d terraform --skip-download 2>&1 | grep -i 'error parsing' >&2 || true
  fail "checkov (parsing errors: those files were not checked)"
fi

printf '\ncheck-terraform.sh: all steps passed (%ss)\n' "$SECONDS"
