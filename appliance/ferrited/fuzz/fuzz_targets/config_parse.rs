#![no_main]
//! The daemon's configuration file and `--state-dir` state file: never panic. A configuration
//! that parses survives the state file's render/parse round trip unchanged, and its value
//! fields (cores, idle policy, sizes, UUID/NGUID hex) go through the parsers the daemon uses.

use std::path::Path;

use ferrite_daemon::config::{parse_hex16, parse_size, Config};
use ferrite_daemon::state::{parse_state, render_state};
use ferrite_reactor::{CoreList, IdlePolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let _ = parse_state(text, path);
    let Ok(cfg) = Config::parse(text, path) else {
        return;
    };
    if let Some(c) = &cfg.cores {
        let _ = c.parse::<CoreList>();
    }
    if let Some(i) = &cfg.idle {
        let _ = i.parse::<IdlePolicy>();
    }
    for b in &cfg.bdevs {
        if let Some(s) = &b.size {
            let _ = parse_size(s);
        }
    }
    for p in &cfg.pools {
        if let Some(s) = &p.cluster_size {
            let _ = parse_size(s);
        }
    }
    for ns in cfg.subsystems.iter().flat_map(|s| &s.namespaces) {
        for hex in [&ns.uuid, &ns.nguid].into_iter().flatten() {
            let _ = parse_hex16(hex);
        }
    }
    let state = render_state(&cfg).expect("a parsed configuration renders");
    let back = parse_state(&state, path).expect("a rendered state parses");
    assert_eq!(back, cfg, "state round trip\n{state}");
});
