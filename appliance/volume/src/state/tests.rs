use super::*;

fn rec(id: u64, name: &str, kind: VolumeKind, size: u64, parent: Option<u64>) -> VolumeRec {
    VolumeRec {
        id: VolId(id),
        name: name.into(),
        kind,
        size,
        parent: parent.map(VolId),
        origin: None,
        prov: Provisioning::Thin,
        uuid: [id as u8; 16],
        created: 1,
    }
}

fn apply_all(s: &mut State, ops: &[Op]) {
    for op in ops {
        s.apply(op).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.check(), Vec::<String>::new(), "after {op:?}");
    }
}

#[test]
fn refcounts_follow_snapshots_clones_and_deletes() {
    let mut s = State::new(1 << 20, 16);
    let v = VolId(1);
    apply_all(
        &mut s,
        &[
            Op::CreateVolume(rec(1, "v", VolumeKind::Volume, 4 << 20, None)),
            Op::MapCluster {
                vol: v,
                vc: 0,
                pc: 3,
            },
            Op::MapCluster {
                vol: v,
                vc: 1,
                pc: 4,
            },
            Op::Snapshot {
                src: v,
                rec: rec(2, "s", VolumeKind::Snapshot, 4 << 20, None),
            },
            Op::Clone {
                snap: VolId(2),
                rec: rec(3, "c", VolumeKind::Clone, 4 << 20, Some(2)),
            },
        ],
    );
    assert_eq!(s.refcount[3], 3);
    assert!(s.is_shared(4));
    // Copy-on-write of cluster 0 of v into reserved cluster 9.
    apply_all(
        &mut s,
        &[
            Op::Reserve { clusters: vec![9] },
            Op::MapCluster {
                vol: v,
                vc: 0,
                pc: 9,
            },
        ],
    );
    assert_eq!((s.refcount[3], s.refcount[9]), (2, 1));
    // Deleting the snapshot keeps the clone's data; the clone becomes independent.
    apply_all(&mut s, &[Op::DeleteVolume { vol: VolId(2) }]);
    assert_eq!(s.refcount[3], 1);
    assert_eq!(s.volumes[&VolId(3)].kind, VolumeKind::Volume);
    apply_all(&mut s, &[Op::DeleteVolume { vol: VolId(3) }]);
    assert!(s.needs_zeroing.contains(3) && !s.free.contains(3));
    apply_all(&mut s, &[Op::ClustersZeroed { clusters: vec![3] }]);
    assert!(s.free.contains(3));
    // Shrink releases, grow adds unallocated entries.
    apply_all(
        &mut s,
        &[
            Op::Resize {
                vol: v,
                size: 1 << 20,
            },
            Op::Resize {
                vol: v,
                size: 3 << 20,
            },
        ],
    );
    assert_eq!(s.table(v), &[9, NONE, NONE]);
    assert!(s.needs_zeroing.contains(4));
    let stats = (s.allocated, s.refs);
    assert_eq!(stats, (1, 1));
}

#[test]
fn invalid_ops_change_nothing() {
    let mut s = State::new(1 << 20, 4);
    apply_all(
        &mut s,
        &[Op::CreateVolume(rec(
            1,
            "v",
            VolumeKind::Volume,
            2 << 20,
            None,
        ))],
    );
    let before = s.clone();
    let bad = [
        Op::MapCluster {
            vol: VolId(1),
            vc: 2,
            pc: 0,
        },
        Op::MapCluster {
            vol: VolId(1),
            vc: 0,
            pc: 4,
        },
        Op::MapCluster {
            vol: VolId(9),
            vc: 0,
            pc: 0,
        },
        Op::CreateVolume(rec(2, "v", VolumeKind::Volume, 1, None)),
        Op::ClustersZeroed { clusters: vec![0] },
        Op::Unreserve { clusters: vec![0] },
        Op::Revert {
            vol: VolId(1),
            snap: VolId(1),
        },
        Op::Clone {
            snap: VolId(1),
            rec: rec(3, "c", VolumeKind::Clone, 2 << 20, Some(1)),
        },
    ];
    for op in &bad {
        assert!(s.apply(op).is_err(), "{op:?}");
        assert_eq!(s, before, "{op:?} changed the state");
    }
    // A reserved cluster can be mapped; one waiting for zeroing cannot.
    apply_all(
        &mut s,
        &[
            Op::MapCluster {
                vol: VolId(1),
                vc: 0,
                pc: 0,
            },
            Op::UnmapCluster {
                vol: VolId(1),
                vc: 0,
            },
        ],
    );
    assert!(s
        .apply(&Op::MapCluster {
            vol: VolId(1),
            vc: 0,
            pc: 0
        })
        .is_err());
}

#[test]
fn check_reports_corruption() {
    let mut s = State::new(1 << 20, 4);
    apply_all(
        &mut s,
        &[
            Op::CreateVolume(rec(1, "v", VolumeKind::Volume, 2 << 20, None)),
            Op::MapCluster {
                vol: VolId(1),
                vc: 0,
                pc: 1,
            },
        ],
    );
    let mut bad = s.clone();
    bad.refcount[1] = 2;
    assert!(bad.check().iter().any(|e| e.contains("refcount 2")));
    let mut bad = s.clone();
    bad.free.insert(1);
    assert!(bad
        .check()
        .iter()
        .any(|e| e.contains("referenced and free")));
    let mut bad = s.clone();
    bad.tables.get_mut(&VolId(1)).expect("table").push(NONE);
    assert!(bad
        .check()
        .iter()
        .any(|e| e.contains("table has 3 entries")));
    let mut bad = s.clone();
    bad.volumes.get_mut(&VolId(1)).expect("vol").parent = Some(VolId(7));
    assert!(!bad.check().is_empty());
}

#[test]
fn codec_round_trips_and_rejects_garbage() {
    let mut s = State::new(1 << 20, 64);
    let ops = vec![
        Op::CreateVolume(rec(1, "v", VolumeKind::Volume, 5 << 20, None)),
        Op::MapCluster {
            vol: VolId(1),
            vc: 4,
            pc: 60,
        },
        Op::MapCluster {
            vol: VolId(1),
            vc: 0,
            pc: 2,
        },
        Op::Snapshot {
            src: VolId(1),
            rec: rec(2, "s", VolumeKind::Snapshot, 5 << 20, None),
        },
        Op::Clone {
            snap: VolId(2),
            rec: rec(3, "c", VolumeKind::Clone, 5 << 20, Some(2)),
        },
        Op::Reserve {
            clusters: vec![7, 5],
        },
        Op::Unreserve { clusters: vec![5] },
        Op::Rename {
            vol: VolId(3),
            name: "c2".into(),
        },
        Op::Resize {
            vol: VolId(1),
            size: 7 << 20,
        },
        Op::UnmapCluster {
            vol: VolId(1),
            vc: 0,
        },
        Op::Revert {
            vol: VolId(3),
            snap: VolId(2),
        },
        Op::Detach { vol: VolId(3) },
    ];
    apply_all(&mut s, &ops);
    let bytes = encode_ops(&ops);
    let mut decoded = decode_ops(&bytes).expect("valid");
    // Cluster lists are stored sorted.
    decoded[5] = Op::Reserve {
        clusters: vec![7, 5],
    };
    assert_eq!(decoded, ops);
    for cut in 0..bytes.len() {
        assert!(decode_ops(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    let cp = s.encode();
    let back = State::decode(&cp, 64).expect("valid checkpoint");
    assert_eq!(back, s);
    for cut in 0..cp.len() {
        assert!(State::decode(&cp[..cut], 64).is_err(), "truncated at {cut}");
    }
    assert!(
        State::decode(&cp, 63).is_err(),
        "more clusters than the labels say"
    );
    let mut garbled = cp.clone();
    garbled[0] = 9;
    assert!(State::decode(&garbled, 64).is_err());
    assert!(decode_ops(&[1, 99]).is_err());
}
