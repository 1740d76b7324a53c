//! The store's queries, run by each backend against its test database.

use super::*;
use crate::model::{
    BootPath, BuildState, DeploymentRecord, DeploymentVersionRecord, NodeRecord, NodeState,
    SandboxState,
};
use std::collections::BTreeMap;

fn sandbox(id: &str, tenant: &str, created_at: i64) -> SandboxRecord {
    SandboxRecord {
        id: id.into(),
        tenant_id: tenant.into(),
        name: None,
        state: SandboxState::Running,
        template_id: "minimal".into(),
        template_version: "1".into(),
        cpu_count: 1,
        memory_mb: 256,
        disk_size_mb: 512,
        timeout_sec: 300,
        idle_timeout_sec: 0,
        always_on: false,
        persistent: false,
        egress: true,
        egress_policy: None,
        egress_policy_updated_at: None,
        env: BTreeMap::from([("A".into(), "1".into())]),
        secret_env: vec![],
        metadata: serde_json::Map::new(),
        tags: vec![],
        external_workspace_id: None,
        external_user_id: None,
        external_project_id: None,
        boot_ms: Some(12),
        boot_path: Some(BootPath::Cold),
        created_at,
        started_at: Some(created_at),
        paused_at: None,
        destroyed_at: None,
        deadline_at: Some(created_at + 300_000),
        last_activity_at: created_at,
        deployment_id: None,
        node_id: Some("node_a".into()),
    }
}

store_test! {
    async fn sandbox_round_trips_and_filters_and_pages() {
        let store = super::super::test_store().await;
        for i in 0..25 {
            let mut s = sandbox(&format!("sbx_{i:02}"), "ten_a", i);
            if i % 2 == 0 {
                s.tags = vec!["even".into(), "x".into()];
                s.external_workspace_id = Some("ws1".into());
            }
            store.insert_sandbox(&s).await.expect("insert");
        }
        store
            .insert_sandbox(&sandbox("sbx_other", "ten_b", 0))
            .await
            .expect("insert");
        let got = store
            .get_sandbox("sbx_03")
            .await
            .expect("get")
            .expect("some");
        assert_eq!(got, sandbox("sbx_03", "ten_a", 3));

        let page = Page {
            page: 2,
            page_size: 10,
        };
        let (list, total) = store
            .list_sandboxes("ten_a", &SandboxFilter::default(), page)
            .await
            .expect("list");
        assert_eq!(total, 25);
        assert_eq!(list.len(), 10);
        assert_eq!(list[0].id, "sbx_14", "newest first, second page");

        let f = SandboxFilter {
            tags: vec!["even".into(), "x".into()],
            external_workspace_id: Some("ws1".into()),
            ..Default::default()
        };
        let (list, total) = store
            .list_sandboxes(
                "ten_a",
                &f,
                Page {
                    page: 1,
                    page_size: 100,
                },
            )
            .await
            .expect("list");
        assert_eq!(total, 13);
        assert!(list.iter().all(|s| s.tags.contains(&"even".to_string())));
        let f = SandboxFilter {
            tags: vec!["even".into(), "nope".into()],
            ..Default::default()
        };
        let (_, total) = store
            .list_sandboxes(
                "ten_a",
                &f,
                Page {
                    page: 1,
                    page_size: 100,
                },
            )
            .await
            .expect("list");
        assert_eq!(total, 0, "every tag must match");
    }
}

store_test! {
    async fn live_names_are_unique_per_tenant_but_reusable_after_destroy() {
        let store = super::super::test_store().await;
        let mut a = sandbox("sbx_a", "ten_a", 1);
        a.name = Some("web".into());
        store.insert_sandbox(&a).await.expect("insert");
        let mut b = sandbox("sbx_b", "ten_a", 2);
        b.name = Some("web".into());
        assert!(matches!(
            store.insert_sandbox(&b).await,
            Err(StoreError::Duplicate(_))
        ));
        let mut other = sandbox("sbx_c", "ten_b", 2);
        other.name = Some("web".into());
        store.insert_sandbox(&other).await.expect("other tenant");
        a.state = SandboxState::Destroyed;
        store.update_sandbox(&a).await.expect("update");
        store.insert_sandbox(&b).await.expect("name free again");
        let found = store
            .sandbox_by_name("ten_a", "web")
            .await
            .expect("by name")
            .expect("some");
        assert_eq!(found.id, "sbx_b", "the live one wins");
    }
}

store_test! {
    async fn events_are_ordered_and_scoped() {
        let store = super::super::test_store().await;
        for (i, (tenant, sbx)) in [("a", "s1"), ("b", "s2"), ("a", "s3"), ("a", "s1")]
            .into_iter()
            .enumerate()
        {
            store
                .append_event(&NewEvent {
                    id: format!("evt_{i}"),
                    tenant_id: tenant.into(),
                    sandbox_id: Some(sbx.into()),
                    kind: "sandbox.created".into(),
                    ts: i as i64,
                    data: serde_json::json!({"i": i}),
                })
                .await
                .expect("append");
        }
        let all = store.events_after("a", None, 0, 100).await.expect("events");
        assert_eq!(
            all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["evt_0", "evt_2", "evt_3"]
        );
        let after = store
            .events_after("a", Some("s1"), all[0].seq, 100)
            .await
            .expect("events");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].id, "evt_3");
        assert_eq!(after[0].data["i"], 3);
    }
}

store_test! {
    async fn events_are_pruned_by_age_then_per_tenant_then_in_all() {
        let store = super::super::test_store().await;
        // 20 events of tenant a at ts 0..20, then 5 of tenant b at ts 100..105.
        let tenants = std::iter::repeat_n("a", 20).chain(std::iter::repeat_n("b", 5));
        for (i, tenant) in tenants.enumerate() {
            let ts = if tenant == "a" {
                i as i64
            } else {
                80 + i as i64
            };
            store
                .append_event(&NewEvent {
                    id: format!("evt_{i}"),
                    tenant_id: tenant.into(),
                    sandbox_id: None,
                    kind: "sandbox.created".into(),
                    ts,
                    data: serde_json::json!({}),
                })
                .await
                .expect("append");
        }
        let ids = |v: Vec<EventRecord>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        // No limits: nothing goes.
        assert_eq!(store.prune_events(None, 0, 0).await.expect("prune"), 0);
        // Older than ts 5: evt_0..evt_4.
        assert_eq!(store.prune_events(Some(5), 0, 0).await.expect("prune"), 5);
        // At most 10 per tenant: a keeps its newest 10 (evt_10..19), b all 5.
        assert_eq!(store.prune_events(None, 0, 10).await.expect("prune"), 5);
        let a = ids(store.events_after("a", None, 0, 100).await.expect("a"));
        assert_eq!(a.first().map(String::as_str), Some("evt_10"));
        assert_eq!(a.len(), 10);
        // At most 8 in all: the oldest go, whoever's they are.
        assert_eq!(store.prune_events(None, 8, 0).await.expect("prune"), 7);
        let a = ids(store.events_after("a", None, 0, 100).await.expect("a"));
        let b = ids(store.events_after("b", None, 0, 100).await.expect("b"));
        assert_eq!((a.len(), b.len()), (3, 5));
        assert_eq!(a[0], "evt_17");
        // Sequence numbers are not reused after a prune.
        let next = store
            .append_event(&NewEvent {
                id: "evt_new".into(),
                tenant_id: "a".into(),
                sandbox_id: None,
                kind: "sandbox.created".into(),
                ts: 200,
                data: serde_json::json!({}),
            })
            .await
            .expect("append");
        assert_eq!(next.seq, 26);
    }
}

store_test! {
    async fn a_prune_larger_than_a_batch_goes_whole() {
        let store = super::super::test_store().await;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12001) \
             INSERT INTO events (id, tenant_id, type, ts, data) \
             SELECT 'evt_' || i, 'a', 'sandbox.created', i, '{}' FROM n",
        )
        .execute(&store.pool)
        .await
        .expect("insert");
        assert_eq!(
            store.prune_events(Some(11_002), 0, 0).await.expect("prune"),
            11_001
        );
        let left = store
            .events_after("a", None, 0, 10_000)
            .await
            .expect("left");
        assert_eq!(left.len(), 1000);
        assert_eq!(left[0].ts, 11_002);
    }
}

store_test! {
    async fn usage_intervals_close_and_open() {
        let store = super::super::test_store().await;
        let iv = |state, start| UsageInterval {
            sandbox_id: "s1".into(),
            tenant_id: "a".into(),
            state,
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            external_workspace_id: Some("ws".into()),
            external_user_id: None,
            external_project_id: None,
            template_id: "minimal".into(),
            deployment_id: Some("dep_1".into()),
            started_at: start,
            ended_at: None,
        };
        store
            .switch_usage("s1", 0, Some(&iv(SandboxState::Running, 0)))
            .await
            .expect("open");
        store
            .switch_usage("s1", 1_000, Some(&iv(SandboxState::Paused, 1_000)))
            .await
            .expect("switch");
        store.switch_usage("s1", 5_000, None).await.expect("close");
        let got = store
            .usage_intervals("a", Some("s1"), 0, 10_000)
            .await
            .expect("usage");
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].started_at, got[0].ended_at), (0, Some(1_000)));
        assert_eq!(
            (got[1].state, got[1].ended_at),
            (SandboxState::Paused, Some(5_000))
        );
        let none = store
            .usage_intervals("b", None, 0, 10_000)
            .await
            .expect("usage");
        assert!(none.is_empty());
    }
}

store_test! {
    async fn templates_and_numbered_builds() {
        let store = super::super::test_store().await;
        let t = TemplateRecord {
            id: "tpl_1".into(),
            tenant_id: "a".into(),
            name: "web".into(),
            created_at: 1,
        };
        store.insert_template(&t).await.expect("insert");
        let dup = TemplateRecord {
            id: "tpl_2".into(),
            ..t.clone()
        };
        assert!(matches!(
            store.insert_template(&dup).await,
            Err(StoreError::Duplicate(_))
        ));
        let other_tenant = TemplateRecord {
            id: "tpl_3".into(),
            tenant_id: "b".into(),
            ..t.clone()
        };
        store.insert_template(&other_tenant).await.expect("b");
        assert_eq!(
            store.template_by_name("a", "web").await.expect("by name"),
            Some(t.clone())
        );
        assert_eq!(
            store.list_templates("a").await.expect("list"),
            vec![t.clone()]
        );

        let spec = crate::model::BuildSpec {
            from: "minimal".into(),
            from_version: None,
            packages: vec![],
            steps: vec![crate::model::BuildStep::Run("echo hi".into())],
            env: BTreeMap::new(),
            workdir: "/workspace".into(),
            user: None,
            start_cmd: None,
            ready_cmd: Some("true".into()),
            ready_timeout_sec: 60,
            cpu_count: 1,
            memory_mb: 256,
            disk_size_mb: 512,
        };
        let build = |id: &str| BuildRecord {
            id: id.into(),
            template_id: "tpl_1".into(),
            tenant_id: "a".into(),
            version: 0,
            state: BuildState::Queued,
            spec: spec.clone(),
            error: None,
            created_at: 2,
            started_at: None,
            finished_at: None,
        };
        assert_eq!(store.insert_build(&build("bld_1")).await.expect("b1"), 1);
        assert_eq!(store.insert_build(&build("bld_2")).await.expect("b2"), 2);
        let mut b1 = store.get_build("bld_1").await.expect("get").expect("some");
        assert_eq!((b1.version, b1.spec.clone()), (1, spec.clone()));
        b1.state = BuildState::Ready;
        b1.finished_at = Some(9);
        store.update_build(&b1).await.expect("update");
        assert_eq!(
            store
                .fail_unfinished_builds("restarted", 10)
                .await
                .expect("fail"),
            1
        );
        let all = store.list_builds("tpl_1").await.expect("list builds");
        assert_eq!(
            all.iter().map(|b| (b.version, b.state)).collect::<Vec<_>>(),
            vec![(2, BuildState::Failed), (1, BuildState::Ready)]
        );
        assert_eq!(all[0].error.as_deref(), Some("restarted"));
    }
}

store_test! {
    async fn share_tokens_list_and_revoke_by_sandbox_and_by_id() {
        let store = super::super::test_store().await;
        let token = |id: &str, sandbox: &str, preview: Option<&str>, at: i64| PreviewTokenRecord {
            id: id.into(),
            tenant_id: "ten_a".into(),
            sandbox_id: sandbox.into(),
            preview_id: preview.map(str::to_string),
            hash: format!("hash-{id}"),
            prefix: "hpt_x".into(),
            expires_at: 1_000,
            revoked_at: None,
            created_at: at,
        };
        for t in [
            token("pvt_1", "sbx_a", Some("prv_1"), 1),
            token("pvt_2", "sbx_a", Some("prv_2"), 2),
            token("pvt_3", "sbx_a", None, 3),
            token("pvt_4", "sbx_b", None, 4),
        ] {
            store.insert_preview_token(&t).await.expect("insert");
        }
        let ids = |v: Vec<PreviewTokenRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
        let all = store
            .list_preview_tokens("sbx_a", None, 10)
            .await
            .expect("list");
        assert_eq!(
            ids(all),
            ["pvt_3", "pvt_2", "pvt_1"],
            "newest first, one sandbox"
        );
        let one = store
            .list_preview_tokens("sbx_a", Some("prv_1"), 10)
            .await
            .expect("list");
        assert_eq!(ids(one), ["pvt_1"]);
        let capped = store
            .list_preview_tokens("sbx_a", None, 2)
            .await
            .expect("list");
        assert_eq!(capped.len(), 2);

        assert!(store
            .revoke_preview_token("pvt_2", 50)
            .await
            .expect("revoke"));
        assert!(!store
            .revoke_preview_token("pvt_2", 60)
            .await
            .expect("again"));
        let t2 = store.get_preview_token("pvt_2").await.expect("get");
        assert_eq!(
            t2.and_then(|t| t.revoked_at),
            Some(50),
            "first revocation kept"
        );
        // The sandbox-wide token goes with the rest; another sandbox's stays.
        assert_eq!(
            store
                .revoke_sandbox_preview_tokens("sbx_a", 70)
                .await
                .expect("revoke all"),
            2
        );
        let sandbox_wide = store.get_preview_token("pvt_3").await.expect("get");
        assert_eq!(sandbox_wide.and_then(|t| t.revoked_at), Some(70));
        let other = store.get_preview_token("pvt_4").await.expect("get");
        assert_eq!(other.and_then(|t| t.revoked_at), None);
        assert!(store
            .get_preview_token("pvt_9")
            .await
            .expect("get")
            .is_none());
    }
}

fn deployment(id: &str, state: &str, active: Option<&str>) -> DeploymentRecord {
    DeploymentRecord {
        id: id.into(),
        tenant_id: "t".into(),
        name: id.into(),
        slug: format!("slug{id}"),
        state: state.into(),
        active_version_id: active.map(str::to_string),
        instances: active
            .map(|_| vec!["sbx_i".to_string()])
            .unwrap_or_default(),
        replicas: 2,
        env: BTreeMap::from([("A".to_string(), "1".to_string())]),
        metadata: serde_json::Map::new(),
        external_workspace_id: Some("ws".into()),
        external_user_id: None,
        external_project_id: None,
        created_at: 1,
        updated_at: 1,
    }
}

fn building_version(id: &str, dep: &str) -> DeploymentVersionRecord {
    DeploymentVersionRecord {
        id: id.into(),
        deployment_id: dep.into(),
        tenant_id: "t".into(),
        version_number: 0,
        state: "building".into(),
        source_sandbox_id: "sbx_s".into(),
        snapshot_id: Some("snap_1".into()),
        runtime_command: "serve".into(),
        runtime_port: 8080,
        health_check_path: "/".into(),
        build_command: Some("make".into()),
        build_log: None,
        output_path: Some("/app".into()),
        error: None,
        promoted_at: None,
        created_at: 1,
    }
}

store_test! {
    async fn deployments_round_trip_and_publishes_cut_short_are_settled() {
        let store = super::super::test_store().await;
        // A first publish under way, and a new version of a serving one.
        store
            .put_deployment(&deployment("dep_new", "building", None))
            .await
            .expect("put");
        let serving = deployment("dep_old", "running", Some("dpv_0"));
        store.put_deployment(&serving).await.expect("put");
        assert_eq!(
            store.get_deployment("dep_old").await.expect("get"),
            Some(serving.clone()),
            "every field round-trips"
        );
        let v1 = store
            .insert_version(&building_version("dpv_1", "dep_new"))
            .await
            .expect("insert");
        let v2 = store
            .insert_version(&building_version("dpv_2", "dep_old"))
            .await
            .expect("insert");
        assert_eq!((v1.version_number, v2.version_number), (1, 1));

        let n = store
            .settle_interrupted_publishes("restarted", 5)
            .await
            .expect("settle");
        assert_eq!(n, 2);
        for (dep, vid) in [("dep_new", "dpv_1"), ("dep_old", "dpv_2")] {
            let v = store.list_versions(dep).await.expect("versions");
            assert_eq!(v[0].id, vid);
            assert_eq!(
                (v[0].state.as_str(), v[0].error.as_deref()),
                ("failed", Some("restarted"))
            );
            assert_eq!(v[0].output_path.as_deref(), Some("/app"));
        }
        let d = store
            .get_deployment("dep_new")
            .await
            .expect("get")
            .expect("dep");
        assert_eq!((d.state.as_str(), d.updated_at), ("failed", 5));
        let d = store
            .get_deployment("dep_old")
            .await
            .expect("get")
            .expect("dep");
        assert_eq!(d, serving, "a deployment that serves keeps serving");
        let filter = crate::model::DeploymentListFilter {
            external_workspace_id: Some("ws".into()),
            state: Some("running".into()),
            ..Default::default()
        };
        let listed = store.list_deployments("t", &filter).await.expect("list");
        assert_eq!(
            listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["dep_old"]
        );
    }
}

fn node(id: &str, heartbeat_at: i64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        api_url: format!("http://{id}:7070"),
        proxy_url: None,
        vcpus: 8,
        memory_mb: 16_384,
        disk_mb: 100_000,
        labels: BTreeMap::from([("region".into(), "eu".into())]),
        templates: vec![],
        key_check: "k1".into(),
        state: NodeState::Active,
        started_at: 1,
        heartbeat_at,
    }
}

store_test! {
    async fn nodes_register_beat_drain_and_are_found_lost_once() {
        let store = super::super::test_store().await;
        store.put_node(&node("node_a", 100)).await.expect("put a");
        store.put_node(&node("node_b", 100)).await.expect("put b");
        assert_eq!(
            store.node_heartbeat("node_a", 5_000, &["minimal/v1/1c".into()]).await.expect("beat"),
            Some(NodeState::Active)
        );
        assert_eq!(store.node_heartbeat("node_x", 5_000, &[]).await.expect("beat"), None);
        let listed = store.list_nodes().await.expect("list");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].labels["region"], "eu");
        assert_eq!(listed[0].templates, ["minimal/v1/1c"]);

        let from = [NodeState::Active, NodeState::Draining];
        assert!(store.set_node_state("node_a", &from, NodeState::Draining).await.expect("drain"));
        assert!(!store
            .set_node_state("node_a", &[NodeState::Active], NodeState::Draining)
            .await
            .expect("not active"));

        // node_b beat last at 100: lost at a cutoff past it, exactly once.
        let lost = store.mark_lost_nodes(1_000).await.expect("sweep");
        assert_eq!(lost.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["node_b"]);
        assert_eq!(store.mark_lost_nodes(1_000).await.expect("again"), vec![]);
        assert_eq!(
            store.node_heartbeat("node_b", 6_000, &[]).await.expect("back"),
            Some(NodeState::Lost)
        );
    }
}

store_test! {
    async fn sandboxes_are_found_by_node_and_load_is_summed_per_node() {
        let store = super::super::test_store().await;
        let mut mine = sandbox("sbx_mine", "t", 1);
        mine.node_id = Some("node_a".into());
        let mut paused = sandbox("sbx_paused", "t", 2);
        paused.node_id = Some("node_a".into());
        paused.state = SandboxState::Paused;
        let mut theirs = sandbox("sbx_theirs", "t", 3);
        theirs.node_id = Some("node_b".into());
        let mut old = sandbox("sbx_old", "t", 4);
        old.node_id = None;
        for s in [&mine, &paused, &theirs, &old] {
            store.insert_sandbox(s).await.expect("insert");
        }
        let ids = |v: Vec<SandboxRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.live_sandboxes("node_a").await.expect("live")),
            ["sbx_mine", "sbx_paused", "sbx_old"]
        );
        assert_eq!(ids(store.node_sandboxes("node_b").await.expect("b")), ["sbx_theirs"]);
        let loads = store.node_loads().await.expect("loads");
        let a = loads["node_a"];
        // The paused one keeps its disk, gives back vCPUs and memory.
        assert_eq!((a.sandboxes, a.vcpus, a.memory_mb, a.disk_mb), (2, 1, 256, 1024));
        assert_eq!(loads["node_b"].sandboxes, 1);
        assert!(!loads.contains_key(""), "unassigned sandboxes belong to no node");
    }
}

store_test! {
    async fn placements_count_in_the_next_choice_until_released_or_expired() {
        use crate::model::PlacementRecord;
        let store = super::super::test_store().await;
        store.put_node(&node("node_a", 100)).await.expect("put a");
        store.put_node(&node("node_b", 100)).await.expect("put b");
        // Each choice takes the node with the fewest vCPUs promised.
        let pick = |id: &'static str, expires_at: i64| {
            move |nodes: &[(NodeRecord, crate::model::NodeLoad)]| {
                let (n, _) = nodes.iter().min_by_key(|(n, l)| (l.vcpus, n.id.clone()))?;
                Some(PlacementRecord {
                    id: id.into(),
                    node_id: n.id.clone(),
                    vcpus: 2,
                    memory_mb: 512,
                    disk_mb: 1024,
                    expires_at,
                })
            }
        };
        let first = store.place(1_000, &pick("plc_1", 5_000)).await.expect("place");
        assert_eq!(first.map(|p| p.node_id).as_deref(), Some("node_a"));
        let second = store.place(1_000, &pick("plc_2", 5_000)).await.expect("place");
        assert_eq!(second.map(|p| p.node_id).as_deref(), Some("node_b"), "A's promise counts");
        let seen = std::sync::Mutex::new(Vec::new());
        let look = |nodes: &[(NodeRecord, crate::model::NodeLoad)]| {
            *seen.lock().expect("lock") = nodes.iter().map(|(n, l)| (n.id.clone(), l.vcpus)).collect();
            None
        };
        assert_eq!(store.place(1_000, &look).await.expect("look"), None);
        assert_eq!(*seen.lock().expect("lock"), [("node_a".to_string(), 2), ("node_b".to_string(), 2)]);
        // Released, A's promise no longer counts; past its time, B's goes.
        store.release_placement("plc_1").await.expect("release");
        assert_eq!(store.place(6_000, &look).await.expect("look"), None);
        assert_eq!(*seen.lock().expect("lock"), [("node_a".to_string(), 0), ("node_b".to_string(), 0)]);
    }
}
