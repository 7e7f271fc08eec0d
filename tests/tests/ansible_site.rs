//! The whole `ferrite.storage` site against real processes: `tests/ansible/run_site.py` runs
//! `site.yml` for a primary appliance, a secondary appliance with replication and a tape
//! gateway (three inventory hosts, connection: local), writes to the primary's journaled
//! namespace with `ferrite-perf` and waits until the secondary applied and acknowledged every
//! write, checks the backup on tape, then idempotence (`changed=0`, also under `--check
//! --diff`), a changed inventory, wrong variables and a teardown that leaves no file behind.
//!
//! Like `ansible_playbooks`, it needs the venv `tests/ansible/venv.sh` makes (skipped without
//! one, except in CI).

#[test]
fn ansible_site_replication_and_tape_converge_and_tear_down() {
    ferrite_e2e::ansible::run_driver(
        "run_site.py",
        &[
            ("ferrite-daemon", "ferritectl"),
            ("ferrite-replicator", "ferrite-replicator"),
            ("ferrite-tape", "ferrite-tape"),
            ("ferrite-perf", "ferrite-perf"),
        ],
    );
}
