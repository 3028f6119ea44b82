//! Tests of the metadata files: round trips, Java-written samples, `.bak` fallback.

use super::*;

const JAVA_TOPICS: &str = "{\n\t\"dataVersion\":{\n\t\t\"counter\":5,\n\t\t\"timestamp\":\
    1700000000000\n\t},\n\t\"topicConfigTable\":{\n\t\t\"TopicTest\":{\n\t\t\t\"order\":false,\
    \n\t\t\t\"perm\":6,\n\t\t\t\"readQueueNums\":4,\n\t\t\t\"topicFilterType\":\"SINGLE_TAG\",\
    \n\t\t\t\"topicName\":\"TopicTest\",\n\t\t\t\"topicSysFlag\":0,\n\t\t\t\
    \"writeQueueNums\":4\n\t\t}\n\t}\n}";

// fastjson's MapSerializer puts integer-keyed entries on one line and the closing brace on
// the next.
const JAVA_OFFSETS: &str = "{\n\t\"offsetTable\":{\n\t\t\"%RETRY%cg@cg\":{0:0\n\t\t},\n\t\t\
    \"TopicTest@cg\":{0:250,1:249,2:250,3:251\n\t\t}\n\t}\n}";

const JAVA_GROUPS: &str = "{\n\t\"dataVersion\":{\n\t\t\"counter\":2,\n\t\t\"timestamp\":\
    1700000000001\n\t},\n\t\"subscriptionGroupTable\":{\n\t\t\"cg\":{\n\t\t\t\"brokerId\":0,\
    \n\t\t\t\"consumeBroadcastEnable\":true,\n\t\t\t\"consumeEnable\":false,\n\t\t\t\
    \"consumeFromMinEnable\":true,\n\t\t\t\"groupName\":\"cg\",\n\t\t\t\
    \"notifyConsumerIdsChangedEnable\":true,\n\t\t\t\"retryMaxTimes\":3,\n\t\t\t\
    \"retryQueueNums\":1,\n\t\t\t\"whichBrokerWhenConsumeSlowly\":1\n\t\t}\n\t}\n}";

const JAVA_DELAY: &str = "{\n\t\"offsetTable\":{1:12,2:0,3:40\n\t}\n}";

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn paths() -> (tempfile::TempDir, MetadataPaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = MetadataPaths::new(dir.path());
    (dir, paths)
}

#[test]
fn paths_follow_the_java_layout() {
    let paths = MetadataPaths::new(Path::new("/s"));
    assert_eq!(paths.topics, Path::new("/s/config/topics.json"));
    assert_eq!(
        paths.consumer_offset,
        Path::new("/s/config/consumerOffset.json")
    );
    assert_eq!(
        paths.subscription_group,
        Path::new("/s/config/subscriptionGroup.json")
    );
    assert_eq!(paths.delay_offset, Path::new("/s/config/delayOffset.json"));
    assert_eq!(
        bak_path(&paths.topics),
        Path::new("/s/config/topics.json.bak")
    );
}

#[test]
fn java_written_files_load() {
    let (_dir, p) = paths();
    write(&p.topics, JAVA_TOPICS);
    write(&p.consumer_offset, JAVA_OFFSETS);
    write(&p.subscription_group, JAVA_GROUPS);
    write(&p.delay_offset, JAVA_DELAY);

    let topics: TopicTable = load(&p.topics).unwrap();
    assert_eq!(topics.data_version().counter, 5);
    assert_eq!(topics.data_version().timestamp, 1_700_000_000_000);
    let t = topics.get("TopicTest").unwrap();
    assert_eq!((t.read_queue_nums, t.write_queue_nums, t.perm), (4, 4, 6));

    let offsets: ConsumerOffsetTable = load(&p.consumer_offset).unwrap();
    assert_eq!(offsets.query("TopicTest", "cg", 3), Some(251));
    assert_eq!(offsets.query("%RETRY%cg", "cg", 0), Some(0));
    assert_eq!(offsets.query("TopicTest", "cg", 4), None);

    let groups: SubscriptionGroupTable = load(&p.subscription_group).unwrap();
    assert_eq!(groups.data_version().counter, 2);
    let cg = groups.get("cg").unwrap();
    assert!(!cg.consume_enable);
    assert_eq!(cg.retry_max_times, 3);
    // The pre-created groups are there even though the file does not list them.
    assert_eq!(groups.groups().len(), 1 + PRE_CREATED_GROUPS.len());

    let delay: DelayOffsetTable = load(&p.delay_offset).unwrap();
    assert_eq!(delay.table().len(), 3);
    assert_eq!(
        (delay.get(1), delay.get(3), delay.get(4)),
        (Some(12), Some(40), None)
    );
}

#[test]
fn our_output_round_trips_and_is_tab_indented() {
    let (_dir, p) = paths();
    let mut offsets = ConsumerOffsetTable::default();
    offsets.commit("T", "g", 0, 12);
    offsets.commit("T", "g", 1, 7);
    persist(&p.consumer_offset, &offsets).unwrap();
    let text = std::fs::read_to_string(&p.consumer_offset).unwrap();
    assert!(text.starts_with("{\n\t\"offsetTable\""), "{text}");
    assert_eq!(
        load::<ConsumerOffsetTable>(&p.consumer_offset).unwrap(),
        offsets
    );

    let mut delay = DelayOffsetTable::default();
    delay.set(3, 40);
    persist(&p.delay_offset, &delay).unwrap();
    assert_eq!(load::<DelayOffsetTable>(&p.delay_offset).unwrap(), delay);

    let mut groups = SubscriptionGroupTable::new();
    groups.get_or_auto_create("cg", true);
    persist(&p.subscription_group, &groups).unwrap();
    assert_eq!(
        load::<SubscriptionGroupTable>(&p.subscription_group).unwrap(),
        groups
    );

    let mut topics = TopicTable::new();
    topics.upsert(topic("TopicTest", 4));
    persist(&p.topics, &topics).unwrap();
    assert_eq!(load::<TopicTable>(&p.topics).unwrap(), topics);
}

#[test]
fn bodies_have_the_documented_shapes() {
    let mut offsets = ConsumerOffsetTable::default();
    offsets.commit("T", "g", 1, 7);
    offsets.commit("T", "g", 0, 12);
    let body = encode_compact(&offsets).unwrap();
    assert_eq!(body, br#"{"offsetTable":{"T@g":{"0":12,"1":7}}}"#);

    let mut delay = DelayOffsetTable::default();
    delay.set(2, 5);
    delay.set(1, 0);
    assert_eq!(
        encode_compact(&delay).unwrap(),
        br#"{"offsetTable":{"1":0,"2":5}}"#
    );

    let cfg = serde_json::to_string(&SubscriptionGroupConfig::new("cg")).unwrap();
    let java = r#"{"brokerId":0,"consumeBroadcastEnable":true,"consumeEnable":true,"#.to_string()
        + r#""consumeFromMinEnable":true,"groupName":"cg","#
        + r#""notifyConsumerIdsChangedEnable":true,"retryMaxTimes":16,"#
        + r#""retryQueueNums":1,"whichBrokerWhenConsumeSlowly":1}"#;
    assert_eq!(cfg, java);

    let groups = SubscriptionGroupTable::new();
    let v: serde_json::Value = decode_json(&encode_compact(&groups).unwrap()).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["dataVersion", "subscriptionGroupTable"]);
    let topics: serde_json::Value =
        decode_json(&encode_compact(&TopicTable::new()).unwrap()).unwrap();
    let keys: Vec<&String> = topics.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["dataVersion", "topicConfigTable"]);
}

#[test]
fn missing_fields_take_java_defaults() {
    let cfg: SubscriptionGroupConfig = decode_json(br#"{"groupName":"g"}"#).unwrap();
    assert_eq!(cfg, SubscriptionGroupConfig::new("g"));
    let cfg: SubscriptionGroupConfig =
        decode_json(br#"{"groupName":"g","groupSysFlag":0,"attributes":{}}"#).unwrap();
    assert_eq!(cfg.retry_max_times, 16);
}

pub(super) fn topic(name: &str, queues: i32) -> TopicConfig {
    TopicConfig {
        order: false,
        perm: 6,
        read_queue_nums: queues,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_name: name.into(),
        topic_sys_flag: 0,
        write_queue_nums: queues,
    }
}

#[test]
fn offsets_by_topic_and_group() {
    let mut t = ConsumerOffsetTable::default();
    assert_eq!(t.commit("T", "a", 0, 10), None);
    assert_eq!(t.commit("T", "a", 0, 12), Some(10));
    assert_eq!(
        t.commit("T", "a", 0, 3),
        Some(12),
        "offset resets move back"
    );
    t.commit("T", "b", 1, 5);
    t.commit("T2", "a", 0, 1);
    t.commit("TT", "c", 0, 1);
    let groups: Vec<&str> = t.groups_of_topic("T").collect();
    assert_eq!(groups, ["a", "b"]);
    // Key order, not topic order: '2' sorts before '@'.
    let topics: Vec<&str> = t.topics_of_group("a").collect();
    assert_eq!(topics, ["T2", "T"]);
    assert_eq!(t.offsets_of("T", "b").unwrap().get(&1), Some(&5));
    assert_eq!(t.remove_group("a"), 2);
    assert_eq!(t.query("T", "a", 0), None);
    assert_eq!(t.query("T", "b", 1), Some(5));
    assert_eq!(t.groups_of_topic("T").collect::<Vec<_>>(), ["b"]);
    assert_eq!(t.remove_group("nobody"), 0);
}

#[test]
fn pre_created_groups_and_auto_create_rules() {
    let mut t = SubscriptionGroupTable::new();
    for name in PRE_CREATED_GROUPS {
        assert_eq!(t.get(name), Some(&SubscriptionGroupConfig::new(name)));
    }
    assert!(t.get("CID_RMQ_SYS_TRANS").is_none());
    let v0 = t.data_version();
    assert_eq!(v0.counter, 0);

    assert!(matches!(
        t.get_or_auto_create("TOOLS_CONSUMER", false),
        GroupLookup::Found(_)
    ));
    assert_eq!(t.get_or_auto_create("cg", false), GroupLookup::Unknown);
    assert_eq!(t.data_version(), v0, "lookups do not bump");

    let created = t.get_or_auto_create("CID_RMQ_SYS_TRANS", false);
    assert!(matches!(created, GroupLookup::Created(c) if c.group_name == "CID_RMQ_SYS_TRANS"));
    assert_eq!(t.data_version().counter, 1);

    let created = t.get_or_auto_create("cg", true).config().cloned();
    assert_eq!(created, Some(SubscriptionGroupConfig::new("cg")));
    assert_eq!(t.data_version().counter, 2);
    assert!(matches!(
        t.get_or_auto_create("cg", true),
        GroupLookup::Found(_)
    ));
    assert_eq!(t.data_version().counter, 2);
}

#[test]
fn every_change_bumps_the_data_version() {
    let mut groups = SubscriptionGroupTable::new();
    let mut cfg = SubscriptionGroupConfig::new("cg");
    cfg.retry_max_times = 3;
    assert!(groups.update(cfg.clone()).is_none());
    assert_eq!(groups.data_version().counter, 1);
    assert_eq!(groups.update(cfg).map(|c| c.retry_max_times), Some(3));
    assert_eq!(groups.data_version().counter, 2);
    assert!(groups.delete("cg").is_some());
    assert_eq!(groups.data_version().counter, 3);
    assert!(groups.delete("cg").is_none());
    assert_eq!(groups.data_version().counter, 3);

    let mut topics = TopicTable::new();
    assert!(topics.seed(topic("SELF_TEST_TOPIC", 1)));
    assert!(!topics.seed(topic("SELF_TEST_TOPIC", 2)));
    assert_eq!(topics.data_version().counter, 0, "seeding is not a change");
    let before = topics.data_version();
    assert!(topics.upsert(topic("T", 4)).is_none());
    assert_eq!(topics.data_version().counter, 1);
    assert!(topics.data_version().timestamp >= before.timestamp);
    assert_eq!(
        topics.upsert(topic("T", 8)).map(|t| t.read_queue_nums),
        Some(4)
    );
    assert!(topics.remove("T").is_some());
    assert!(topics.remove("T").is_none());
    assert_eq!(topics.data_version().counter, 3);
    assert_eq!(topics.wrapper().topic_config_table.len(), 1);
}

#[test]
fn persist_keeps_the_previous_content_as_bak() {
    let (_dir, p) = paths();
    let mut delay = DelayOffsetTable::default();
    for offset in 1..=3 {
        delay.set(1, offset);
        persist(&p.delay_offset, &delay).unwrap();
    }
    let bak: DelayOffsetTable =
        decode_json(&std::fs::read(bak_path(&p.delay_offset)).unwrap()).unwrap();
    assert_eq!(bak.get(1), Some(2));
    assert_eq!(
        load::<DelayOffsetTable>(&p.delay_offset).unwrap().get(1),
        Some(3)
    );
}

#[test]
fn falls_back_to_bak_when_main_is_missing_empty_or_torn() {
    let (_dir, p) = paths();
    let path = &p.consumer_offset;
    write(&bak_path(path), JAVA_OFFSETS);
    let from_bak = |path: &Path| load::<ConsumerOffsetTable>(path).unwrap();
    // Missing: Java's string2File crashed between delete and rename.
    assert_eq!(from_bak(path).query("TopicTest", "cg", 0), Some(250));
    // Empty: a Java write that never reached the disk.
    write(path, "");
    assert_eq!(from_bak(path).query("TopicTest", "cg", 0), Some(250));
    // Torn.
    write(path, &JAVA_OFFSETS[..JAVA_OFFSETS.len() / 2]);
    assert_eq!(from_bak(path).query("TopicTest", "cg", 0), Some(250));
    // Not even UTF-8.
    std::fs::write(path, [0xff, 0xfe, 0x00]).unwrap();
    assert_eq!(from_bak(path).query("TopicTest", "cg", 0), Some(250));
}

#[test]
fn nothing_on_disk_is_empty_but_unreadable_without_backup_is_an_error() {
    let (_dir, p) = paths();
    let groups: SubscriptionGroupTable = load(&p.subscription_group).unwrap();
    assert_eq!(groups.groups().len(), PRE_CREATED_GROUPS.len());
    write(&p.topics, "  \n");
    assert!(load::<TopicTable>(&p.topics).unwrap().topics().is_empty());

    write(&p.delay_offset, "{\"offsetTable\":{1:");
    let err = load::<DelayOffsetTable>(&p.delay_offset).unwrap_err();
    assert!(matches!(err, MetadataError::NoUsableCopy { .. }), "{err}");
    assert!(err.to_string().contains("delayOffset.json"), "{err}");
    write(&bak_path(&p.delay_offset), "garbage");
    let err = load::<DelayOffsetTable>(&p.delay_offset).unwrap_err();
    assert!(err.to_string().contains("delayOffset.json.bak"), "{err}");
    // Main missing, backup corrupt: also refused.
    std::fs::remove_file(&p.delay_offset).unwrap();
    assert!(load::<DelayOffsetTable>(&p.delay_offset).is_err());
}

/// Files of one metadata table on disk at a crash point.
struct DiskState<'a> {
    main: Option<&'a str>,
    bak: Option<&'a str>,
    /// Our temp file for the main file (`delayOffset.tmp`).
    main_tmp: Option<&'a str>,
    /// Our temp file for the `.bak`, which is also Java's temp file for the main file
    /// (`delayOffset.json.tmp`).
    bak_tmp: Option<&'a str>,
}

impl DiskState<'_> {
    fn create(&self, path: &Path) {
        let files = [
            (path.to_path_buf(), self.main),
            (bak_path(path), self.bak),
            (path.with_extension("tmp"), self.main_tmp),
            (path.with_extension("json.tmp"), self.bak_tmp),
        ];
        for (file, content) in files {
            if let Some(content) = content {
                write(&file, content);
            }
        }
    }
}

/// Rebuilds, by hand, the disk state after each step of `persist` (and of Java's
/// string2File) and checks that `load` then returns the old or the new table, and that the
/// next `persist` recovers fully.
#[test]
fn every_crash_point_leaves_a_loadable_copy() {
    let mut old = DelayOffsetTable::default();
    old.set(1, 100);
    let mut new = old.clone();
    new.set(1, 200);
    let old_text = String::from_utf8(encode_pretty(&old).unwrap()).unwrap();
    let new_text = String::from_utf8(encode_pretty(&new).unwrap()).unwrap();
    let (old_t, new_t) = (Some(old_text.as_str()), Some(new_text.as_str()));
    let old_torn = Some(&old_text[..old_text.len() / 2]);
    let new_torn = Some(&new_text[..new_text.len() / 2]);
    let state = |main, bak, main_tmp, bak_tmp| DiskState {
        main,
        bak,
        main_tmp,
        bak_tmp,
    };
    let states = [
        // Ours: writing the .bak's temp file.
        state(old_t, None, None, old_torn),
        // Ours: .bak renamed into place.
        state(old_t, old_t, None, None),
        // Ours: writing the main temp file.
        state(old_t, old_t, new_torn, None),
        // Ours: main temp file complete, not yet renamed.
        state(old_t, old_t, new_t, None),
        // Ours: renamed.
        state(new_t, old_t, None, None),
        // Java: .tmp written, .bak written, main deleted, rename not done.
        state(None, old_t, None, new_t),
        // Java without fsync after power loss: main renamed but empty.
        state(Some(""), old_t, None, None),
    ];
    for (i, disk) in states.iter().enumerate() {
        let (_dir, p) = paths();
        let path = &p.delay_offset;
        disk.create(path);
        let loaded: DelayOffsetTable = load(path).unwrap();
        assert!(loaded == old || loaded == new, "state {i}: {loaded:?}");
        persist(path, &new).unwrap();
        assert_eq!(load::<DelayOffsetTable>(path).unwrap(), new, "state {i}");
    }
}

#[test]
fn a_malformed_main_file_does_not_overwrite_a_good_bak() {
    let (_dir, p) = paths();
    let path = &p.delay_offset;
    write(&bak_path(path), JAVA_DELAY);
    write(path, "{torn");
    let mut table: DelayOffsetTable = load(path).unwrap();
    table.set(1, 13);
    persist(path, &table).unwrap();
    let bak = std::fs::read_to_string(bak_path(path)).unwrap();
    assert_eq!(bak, JAVA_DELAY);
    assert_eq!(load::<DelayOffsetTable>(path).unwrap().get(1), Some(13));
}

#[test]
fn topic_entries_without_a_name_take_their_key() {
    let (_dir, p) = paths();
    write(
        &p.topics,
        r#"{"topicConfigTable":{"T":{"readQueueNums":2}}}"#,
    );
    let topics: TopicTable = load(&p.topics).unwrap();
    let t = topics.get("T").unwrap();
    assert_eq!(
        (t.topic_name.as_str(), t.read_queue_nums, t.write_queue_nums),
        ("T", 2, 16)
    );
}
