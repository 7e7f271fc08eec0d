//! The `ferrite.storage` Ansible collection (`ansible/`) against a real `ferrited`:
//! `tests/ansible/run_playbooks.py` runs `site.yml` and `teardown.yml` with `ansible-playbook`
//! on this machine (connection: local). The appliance role installs and starts the `ferrited`
//! built here, the volumes role provisions it over JSON-RPC; a second run and `--check --diff`
//! report `changed=0`, a changed inventory changes exactly what changed, wrong variables fail
//! naming the variable with nothing applied, and teardown leaves nothing behind.
//!
//! It needs the virtual environment `tests/ansible/venv.sh` makes (`tests/install-deps.sh` runs
//! it); without one the test is skipped, except in CI (`CI=true`) where that is a failure.

#[test]
fn ansible_playbooks_converge_are_idempotent_and_tear_down() {
    ferrite_e2e::ansible::run_driver("run_playbooks.py", &[("ferrite-daemon", "ferritectl")]);
}
