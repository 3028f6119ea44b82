//! Fixtures shared by the bench binaries (each bench is its own crate: `mod common;`).

use ringmq::remoting::RemotingCommand;

/// A SEND_MESSAGE_V2 request as the Java client sends it (captured field values), 128 B body.
pub fn send_v2_request() -> RemotingCommand {
    RemotingCommand::request(310)
        .with_ext("a", "please_rename_unique_group_name")
        .with_ext("b", "TopicTest")
        .with_ext("c", "TBW102")
        .with_ext("d", "4")
        .with_ext("e", "3")
        .with_ext("f", "0")
        .with_ext("g", "1795243657617")
        .with_ext("h", "0")
        .with_ext(
            "i",
            "UNIQ_KEY\u{1}FD0000000000000000000000000002\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA",
        )
        .with_ext("j", "0")
        .with_ext("k", "false")
        .with_ext("m", "false")
        .with_body(vec![b'x'; 128])
}
