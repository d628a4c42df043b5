# Sourced by scripts/test and scripts/setup-chromium: apt-get that waits for another
# apt or dpkg (unattended-upgrades, a parallel install) instead of failing on its lock.
# apt_install PACKAGE... ; apt_update (once per run).

APT_LOCK_TIMEOUT_S="${APT_LOCK_TIMEOUT_S:-900}"

apt_update() {
  [ -n "${APT_UPDATED:-}" ] && return 0
  # `apt-get update` takes the lists lock; DPkg::Lock::Timeout covers it since apt 2.x.
  # A failed update (a mirror hiccup) is retried a few times before giving up.
  local try
  for try in 1 2 3; do
    if apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT_S" update -qq; then
      APT_UPDATED=1
      export APT_UPDATED
      return 0
    fi
    echo "note: apt-get update failed (try $try of 3); retrying" >&2
    sleep $((try * 5))
  done
  return 1
}

apt_install() {
  apt_update || return 1
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT_S" \
    install -y -qq --no-install-recommends "$@" >/dev/null
}
