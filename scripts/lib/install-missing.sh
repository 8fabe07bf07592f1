# Sourced by scripts/demo and scripts/test: installs Debian packages only when what
# they provide is missing, so both scripts are idempotent on a fresh machine.
#
#   install_missing tool:package... -- path:package...
# A tool is looked up on PATH; a path is checked for existence.

# What building weft needs: a C toolchain, protoc with its well-known types
# (libprotobuf-dev holds them, and --no-install-recommends leaves it out), and the
# OpenSSL and zlib headers git2 links against (libgit2 and libssh2 are vendored).
build_tools=(gcc:gcc make:make pkg-config:pkg-config protoc:protobuf-compiler)
build_paths=(/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev
  /usr/include/openssl/ssl.h:libssl-dev /usr/include/zlib.h:zlib1g-dev)

install_missing() {
  local needed=() in_paths=0 pair
  for pair in "$@"; do
    if [[ $pair == -- ]]; then in_paths=1; continue; fi
    if ((in_paths)); then
      [[ -e ${pair%%:*} ]] || needed+=("${pair##*:}")
    else
      command -v "${pair%%:*}" >/dev/null 2>&1 || needed+=("${pair##*:}")
    fi
  done
  ((${#needed[@]})) || return 0
  echo "installing: ${needed[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}"
}
