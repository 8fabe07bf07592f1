# Sourced by the benchmarks that race Ansible (bench/local_vs_ansible,
# bench/package_vs_ansible): one way to install ansible-core and to keep it away from
# the user's and the system's configuration.
#
#   ensure_ansible_core VENV SERIES LOG
#     creates VENV when missing and installs ansible-core SERIES.* from PyPI into it
#     unless that series is there; sets ansible_version and python_version. LOG is the
#     caller's log function.
#   isolate_ansible VENV WORK CFG
#     an empty config CFG, state under WORK, no colour, pipelining on, VENV's Python.

ensure_ansible_core() {
  local venv="$1" series="$2" log="$3" installed=""
  if [[ -x "$venv/bin/python" ]]; then
    installed="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("ansible-core"))' 2>/dev/null || true)"
  else
    "$log" "creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  if [[ "$installed" != "$series".* ]]; then
    "$log" "installing ansible-core==$series.* into $venv (found: ${installed:-none})"
    "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$series.*" >&2
    installed="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("ansible-core"))')"
  fi
  ansible_version="$installed"
  python_version="$("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
  "$log" "ansible-core $ansible_version (Python $python_version)"
}

isolate_ansible() {
  local venv="$1" work="$2" cfg="$3"
  : >"$cfg"
  export ANSIBLE_CONFIG="$cfg"
  export ANSIBLE_HOME="$work/ansible-home"
  export ANSIBLE_LOCAL_TEMP="$work/ansible-home/tmp"
  export ANSIBLE_REMOTE_TMP="$work/ansible-home/remote-tmp"
  export ANSIBLE_NOCOLOR=1
  export ANSIBLE_HOST_KEY_CHECKING=False
  export ANSIBLE_RETRY_FILES_ENABLED=0
  export ANSIBLE_PIPELINING=True
  export ANSIBLE_LOCALHOST_WARNING=False
  export ANSIBLE_INVENTORY_UNPARSED_WARNING=False
  export ANSIBLE_PYTHON_INTERPRETER="$venv/bin/python"
}
