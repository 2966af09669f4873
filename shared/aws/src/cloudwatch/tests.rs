//! The alarms against the CloudWatch stand-in (aws-smithy-mocks rules over
//! shared state, with the API reference's shapes): which alarms each kind
//! of cache gets, the PutMetricAlarm request, what a repeat, a plan change
//! and a smaller cache send, deletion, states, errors and the orphan sweep.

use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use broker_testing::cloudwatch::FakeCloudWatch;

use super::*;
use crate::elasticache::names::Names;

const INSTANCE: &str = "6f1c2a9e-0b7d-4c1e-9a53-2d1f0e8b7c64";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:cache-alarms";

fn cache() -> String {
    Names::new("osb").cache(INSTANCE)
}

fn members(ids: &[&str]) -> Vec<CacheNode> {
    ids.iter().map(|m| CacheNode { cluster_id: format!("{}-{m}", cache()), node_id: None }).collect()
}

fn spec(engine: Engine, nodes: Vec<CacheNode>) -> AlarmSpec {
    AlarmSpec {
        cache_key: INSTANCE.into(),
        engine,
        nodes,
        thresholds: AlarmThresholds::default(),
        tags: vec![("broker-instance-id".into(), INSTANCE.into()), ("organization".into(), "org-1".into())],
    }
}

fn alarms_on(fake: &FakeCloudWatch, topic: Option<&str>) -> CloudWatchAlarms {
    CloudWatchAlarms::new(fake.client.clone(), "osb", topic.iter().map(|t| t.to_string()).collect())
}

#[test]
fn each_node_gets_the_engines_three_alarms_and_memcached_two_per_node() {
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, None);
    let c = cache();
    // Cluster mode, two shards of a primary and a replica.
    let redis =
        alarms.wanted(&spec(Engine::Valkey, members(&["0001-001", "0001-002", "0002-001", "0002-002"])));
    assert_eq!(redis.len(), 12);
    let on_first: Vec<(String, &str)> =
        redis.iter().filter(|a| a.node.ends_with("0001-001")).map(|a| (a.name.clone(), a.metric)).collect();
    assert_eq!(
        on_first,
        [
            (format!("{c}/0001-001/CurrConnections"), "CurrConnections"),
            (format!("{c}/0001-001/DatabaseMemoryUsagePercentage"), "DatabaseMemoryUsagePercentage"),
            (format!("{c}/0001-001/EngineCPUUtilization"), "EngineCPUUtilization"),
        ]
    );
    let cpu = redis.iter().find(|a| a.metric == "EngineCPUUtilization").unwrap();
    assert_eq!(cpu.dimensions, [("CacheClusterId", format!("{c}-0001-001"))]);
    assert_eq!((cpu.threshold, cpu.statistic.clone()), (80.0, Statistic::Average));
    let connections = redis.iter().find(|a| a.metric == "CurrConnections").unwrap();
    assert_eq!((connections.threshold, connections.statistic.clone()), (1000.0, Statistic::Maximum));

    // Memcached: one cluster of several nodes; no memory-share metric.
    let nodes = ["0001", "0002"]
        .iter()
        .map(|n| CacheNode { cluster_id: c.clone(), node_id: Some(n.to_string()) })
        .collect();
    let memcached = alarms.wanted(&spec(Engine::Memcached, nodes));
    let names: Vec<&str> = memcached.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{c}/0001/CPUUtilization"),
            format!("{c}/0001/CurrConnections"),
            format!("{c}/0002/CPUUtilization"),
            format!("{c}/0002/CurrConnections"),
        ]
    );
    assert_eq!(memcached[0].dimensions, [("CacheClusterId", c.clone()), ("CacheNodeId", "0001".to_string())]);

    // A threshold set to null in the catalog: no alarm on that metric.
    let mut s = spec(Engine::Redis, members(&["001"]));
    s.thresholds.connections = None;
    let metrics: Vec<&str> = alarms.wanted(&s).iter().map(|a| a.metric).collect();
    assert_eq!(metrics, ["DatabaseMemoryUsagePercentage", "EngineCPUUtilization"]);
}

#[tokio::test]
async fn put_sends_what_the_plan_asks_with_the_topic_and_tags_and_a_repeat_sends_nothing_new() {
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, Some(TOPIC));
    let s = spec(Engine::Redis, members(&["001", "002"]));
    assert_eq!(alarms.put(&s).await.unwrap(), 6);
    let c = cache();
    assert_eq!(fake.calls()[0], format!("DescribeAlarms {c}/"), "the cache's alarms are read first");
    assert_eq!(fake.count("PutMetricAlarm"), 6);

    let a = fake.alarm(&format!("{c}/002/EngineCPUUtilization")).expect("the alarm");
    assert_eq!(a.namespace(), Some("AWS/ElastiCache"));
    assert_eq!(a.metric_name(), Some("EngineCPUUtilization"));
    assert_eq!(a.dimensions().len(), 1);
    assert_eq!(a.dimensions()[0].name(), Some("CacheClusterId"));
    assert_eq!(a.dimensions()[0].value(), Some(format!("{c}-002").as_str()));
    assert_eq!((a.period(), a.evaluation_periods(), a.datapoints_to_alarm()), (Some(60), Some(5), Some(5)));
    assert_eq!(a.threshold(), Some(80.0));
    assert_eq!(a.comparison_operator(), Some(&ComparisonOperator::GreaterThanThreshold));
    assert_eq!(a.treat_missing_data(), Some("missing"));
    assert_eq!(a.alarm_actions(), [TOPIC]);
    assert_eq!(a.ok_actions(), [TOPIC], "recovery is told too");
    let tags = fake.tags(&format!("{c}/002/EngineCPUUtilization"));
    for tag in [
        ("broker", "osb"),
        ("broker-cache", INSTANCE),
        ("broker-instance-id", INSTANCE),
        ("organization", "org-1"),
    ] {
        assert!(tags.contains(&(tag.0.to_string(), tag.1.to_string())), "{tag:?} in {tags:?}");
    }

    // The job delivered again: the alarms are read and nothing is sent.
    assert_eq!(alarms.put(&s).await.unwrap(), 6);
    assert_eq!(fake.count("PutMetricAlarm"), 6);
    assert_eq!(fake.count("DeleteAlarms"), 0);

    // A plan change of a threshold puts the alarms on that metric again.
    let mut lower = s.clone();
    lower.thresholds.cpu_percent = Some(60.0);
    alarms.put(&lower).await.unwrap();
    assert_eq!(fake.count("PutMetricAlarm"), 8, "the two CPU alarms, one per node");
    assert_eq!(fake.alarm(&format!("{c}/001/EngineCPUUtilization")).unwrap().threshold(), Some(60.0));

    // A replica removed, and the connections alarm turned off: the alarms
    // of the node that left and of that metric go.
    let mut smaller = lower.clone();
    smaller.nodes = members(&["001"]);
    smaller.thresholds.connections = None;
    assert_eq!(alarms.put(&smaller).await.unwrap(), 2);
    assert_eq!(
        fake.names(),
        [format!("{c}/001/DatabaseMemoryUsagePercentage"), format!("{c}/001/EngineCPUUtilization")]
    );
    assert_eq!(fake.count("PutMetricAlarm"), 8);
}

#[tokio::test]
async fn delete_removes_every_alarm_of_the_cache_and_only_those_and_is_fine_with_none() {
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, None);
    alarms.put(&spec(Engine::Valkey, members(&["001", "002", "003"]))).await.unwrap();
    let other = Names::new("osb").cache("another-instance");
    fake.add(&format!("{other}/001/CurrConnections"), &[("broker", "osb")]);
    alarms.delete(INSTANCE).await.unwrap();
    assert_eq!(fake.names(), [format!("{other}/001/CurrConnections")]);
    let deletes = fake.count("DeleteAlarms");
    alarms.delete(INSTANCE).await.unwrap();
    assert_eq!(fake.count("DeleteAlarms"), deletes, "nothing left: no DeleteAlarms");
}

#[tokio::test]
async fn more_alarms_than_a_page_are_all_read_and_deleted() {
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, None);
    // 40 member clusters x 3 metrics: more than one DescribeAlarms page and
    // one DeleteAlarms call.
    let ids: Vec<String> = (1..=40).map(|n| format!("{n:03}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let s = spec(Engine::Redis, members(&ids));
    assert_eq!(alarms.put(&s).await.unwrap(), 120);
    assert_eq!(alarms.put(&s).await.unwrap(), 120);
    assert_eq!(fake.count("PutMetricAlarm"), 120, "the second page was read too");
    alarms.delete(INSTANCE).await.unwrap();
    assert!(fake.names().is_empty());
    assert_eq!(fake.count("DeleteAlarms"), 2, "100 names per call");
}

#[tokio::test]
async fn states_name_the_metric_node_threshold_and_state() {
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, None);
    assert_eq!(alarms.states(INSTANCE).await.unwrap(), Some(vec![]));
    alarms.put(&spec(Engine::Redis, members(&["001"]))).await.unwrap();
    let c = cache();
    fake.set_state(&format!("{c}/001/EngineCPUUtilization"), StateValue::Alarm);
    let states = alarms.states(INSTANCE).await.unwrap().unwrap();
    let seen: Vec<(&str, &str, f64, &str)> =
        states.iter().map(|s| (s.metric.as_str(), s.node.as_str(), s.threshold, s.state.as_str())).collect();
    let node = format!("{c}-001");
    assert_eq!(
        seen,
        [
            ("CurrConnections", node.as_str(), 1000.0, "INSUFFICIENT_DATA"),
            ("DatabaseMemoryUsagePercentage", node.as_str(), 80.0, "INSUFFICIENT_DATA"),
            ("EngineCPUUtilization", node.as_str(), 80.0, "ALARM"),
        ]
    );
    assert!(states[0].since.as_deref().is_some_and(|t| t.ends_with('Z')), "{:?}", states[0].since);
}

#[tokio::test]
async fn throttling_is_retryable_and_a_refusal_is_final_and_named_in_aws_terms() {
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, None);
    let s = spec(Engine::Redis, members(&["001"]));
    fake.fail_puts(1, "Throttling", "Rate exceeded");
    match alarms.put(&s).await {
        Err(ProviderError::Retryable(m)) => assert_eq!(m, "PutMetricAlarm failed: Throttling: Rate exceeded"),
        other => panic!("{other:?}"),
    }
    fake.fail_puts(1, "LimitExceeded", "The maximum number of alarms has been reached");
    match alarms.put(&s).await {
        Err(ProviderError::Permanent(m)) => {
            assert!(m.starts_with("PutMetricAlarm failed: LimitExceeded"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // The next attempt goes on from what was made.
    assert_eq!(alarms.put(&s).await.unwrap(), 3);
    assert_eq!(fake.names().len(), 3);
}

#[tokio::test]
async fn the_sweep_lists_alarms_of_caches_no_live_instance_has_and_deletes_only_the_brokers() {
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, None);
    let names = Names::new("osb");
    alarms.put(&spec(Engine::Redis, members(&["001"]))).await.unwrap();
    let dead = names.cache("a-deprovisioned-instance");
    let foreign = names.cache("made-by-hand");
    fake.add(&format!("{dead}/001/CurrConnections"), &[("broker", "osb")]);
    fake.add(&format!("{foreign}/001/CurrConnections"), &[("team", "payments")]);
    fake.add("osb-by-hand/CPU", &[("broker", "osb")]);
    fake.add("osbx-abc/001/CPU", &[("broker", "osbx")]);

    let live: LiveCaches = [INSTANCE.to_string()].into();
    let page = alarms.leftovers(ResourceKind::Alarm, None, &live).await.unwrap();
    let ids: Vec<&str> = page.leftovers.iter().map(|l| l.id.as_str()).collect();
    let mut expected = [format!("{dead}/001/CurrConnections"), format!("{foreign}/001/CurrConnections")];
    expected.sort();
    assert_eq!(ids, expected, "the live cache's alarms and names not of the broker's shape are left out");
    assert!(page.leftovers.iter().all(|l| l.claim == Claim::Nobody && l.reference.contains(":alarm:")));
    assert_eq!(page.next, None);

    for leftover in &page.leftovers {
        let removal = alarms.remove(leftover).await.unwrap();
        let want = if leftover.id.starts_with(&dead) { Removal::Removed } else { Removal::NotOurs };
        assert_eq!(removal, want, "{}", leftover.id);
    }
    assert!(!fake.names().contains(&format!("{dead}/001/CurrConnections")));
    assert!(fake.names().contains(&format!("{foreign}/001/CurrConnections")));
    // Gone meanwhile: nothing to do.
    let removed = page.leftovers.iter().find(|l| l.id.starts_with(&dead)).unwrap();
    assert_eq!(alarms.remove(removed).await.unwrap(), Removal::Gone);
}

/// The dashboard's charts: one GetMetricData for every node and metric,
/// a point a minute over the window asked, each series with its plan
/// threshold, whatever the alarms are.
#[tokio::test]
async fn charts_ask_one_get_metric_data_for_every_node_and_metric_and_file_the_points_by_node() {
    use aws_sdk_cloudwatch::types::ScanBy;
    use broker_core::ports::{CacheMetrics, MetricUnit};
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, None);
    let c = cache();
    let (since, until) = (1_800_000_000, 1_800_010_800);
    let first = format!("{c}-0001-001");
    fake.set_datapoints(
        "EngineCPUUtilization",
        &[("CacheClusterId", &first)],
        &[(until - 60, 12.5), (since + 60, 3.0), (since - 60, 99.0)],
    );
    fake.set_datapoints(
        "CurrConnections",
        &[("CacheClusterId", &format!("{c}-0001-002"))],
        &[(until - 120, 7.0)],
    );

    let charts = alarms.recent(&spec(Engine::Valkey, members(&["0001-001", "0001-002"])), since, until).await;
    let charts = charts.unwrap().expect("CloudWatch measures");
    assert_eq!(charts.len(), 6, "two nodes, three metrics");
    let cpu = charts.iter().find(|s| s.metric == "EngineCPUUtilization" && s.node == first).unwrap();
    assert_eq!(cpu.points, [(since + 60, 3.0), (until - 60, 12.5)], "oldest first, the window only");
    assert_eq!((cpu.unit, cpu.threshold), (MetricUnit::Percent, Some(80.0)));
    let connections =
        charts.iter().find(|s| s.metric == "CurrConnections" && s.node.ends_with("0001-002")).unwrap();
    assert_eq!(
        (connections.points.as_slice(), connections.threshold),
        (&[(until - 120, 7.0)][..], Some(1000.0))
    );
    assert!(
        charts.iter().filter(|s| s.metric == "DatabaseMemoryUsagePercentage").all(|s| s.points.is_empty())
    );

    assert_eq!(fake.calls(), ["GetMetricData 6"], "one request, and no alarm read");
    let request = fake.state.lock().unwrap().metric_requests[0].clone();
    assert_eq!(request.start_time().map(|t| t.secs()), Some(since));
    assert_eq!(request.end_time().map(|t| t.secs()), Some(until));
    assert_eq!(request.scan_by(), Some(&ScanBy::TimestampAscending));
    let asked: Vec<(String, String, i32, String, bool)> = request
        .metric_data_queries()
        .iter()
        .map(|q| {
            let stat = q.metric_stat().unwrap();
            let metric = stat.metric().unwrap();
            assert_eq!(metric.namespace(), Some("AWS/ElastiCache"));
            let dims: Vec<String> = metric
                .dimensions()
                .iter()
                .map(|d| format!("{}={}", d.name().unwrap(), d.value().unwrap()))
                .collect();
            (
                q.id().unwrap().to_string(),
                format!("{} {}", metric.metric_name().unwrap(), dims.join(",")),
                stat.period().unwrap(),
                stat.stat().unwrap().to_string(),
                q.return_data().unwrap(),
            )
        })
        .collect();
    assert_eq!(asked.len(), 6);
    assert!(asked.iter().all(|(_, _, period, _, returned)| *period == 60 && *returned));
    assert_eq!(asked[0].0, "m0");
    assert_eq!(asked[0].1, format!("EngineCPUUtilization CacheClusterId={first}"));
    assert_eq!(asked[0].3, "Average");
    assert_eq!(asked[1].1, format!("CurrConnections CacheClusterId={first}"));
    assert_eq!(asked[1].3, "Maximum");
}

#[tokio::test]
async fn memcached_charts_name_each_node_and_its_bytes_in_use_and_every_page_is_read() {
    use broker_core::ports::{CacheMetrics, MetricUnit};
    let fake = FakeCloudWatch::new();
    fake.state.lock().unwrap().results_per_page = Some(4);
    let alarms = alarms_on(&fake, None);
    let c = cache();
    let nodes: Vec<CacheNode> = ["0001", "0002"]
        .iter()
        .map(|n| CacheNode { cluster_id: c.clone(), node_id: Some(n.to_string()) })
        .collect();
    let bytes = [(100, 1024.0), (160, 2048.0)];
    fake.set_datapoints("BytesUsedForCacheItems", &[("CacheClusterId", &c), ("CacheNodeId", "0002")], &bytes);
    fake.set_datapoints("CPUUtilization", &[("CacheClusterId", &c), ("CacheNodeId", "0001")], &[(100, 1.0)]);
    let charts = alarms.recent(&spec(Engine::Memcached, nodes), 0, 1_000).await.unwrap().unwrap();
    assert_eq!(charts.len(), 6, "two nodes, three metrics");
    assert_eq!(fake.calls(), ["GetMetricData 6", "GetMetricData 6"], "the second page too");
    let used =
        charts.iter().find(|s| s.metric == "BytesUsedForCacheItems" && s.node.ends_with("/0002")).unwrap();
    assert_eq!((used.unit, used.threshold, used.points.as_slice()), (MetricUnit::Bytes, None, &bytes[..]));
    let cpu = charts.iter().find(|s| s.metric == "CPUUtilization" && s.node.ends_with("/0001")).unwrap();
    assert_eq!(cpu.points, [(100, 1.0)], "found on the first page");
    assert_eq!(
        alarms.wanted(&spec(Engine::Memcached, vec![CacheNode { cluster_id: c, node_id: None }])).len(),
        2,
        "bytes are charted, never alarmed"
    );
}

#[tokio::test]
async fn a_cache_of_more_series_than_one_request_takes_is_asked_in_chunks_of_500() {
    use broker_core::ports::CacheMetrics;
    let fake = FakeCloudWatch::new();
    let alarms = alarms_on(&fake, None);
    let ids: Vec<String> = (1..=170).map(|n| format!("{n:04}-001")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let charts = alarms.recent(&spec(Engine::Redis, members(&ids)), 0, 60).await.unwrap().unwrap();
    assert_eq!(charts.len(), 510);
    assert_eq!(fake.calls(), ["GetMetricData 500", "GetMetricData 10"]);
}
