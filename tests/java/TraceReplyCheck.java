// Apache RocketMQ 4.9.8's own Java client against a running ringmq: message trace
// (enableMsgTrace on a producer and a push consumer, the trace records read back through
// DefaultMQAdminExt and decoded with the client's TraceDataEncoder) and request-reply
// (DefaultMQProducer.request answered by a consumer with MessageUtil.createReplyMessage).
// Not part of `cargo test` (it needs a JDK and the RocketMQ classes): run it with
// tests/java/run.sh, which starts ringmq, compiles this file and runs it.
//
// Usage: java TraceReplyCheck <namesrv addr>; exits 0 when every check passed.

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.rocketmq.client.QueryResult;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.trace.TraceBean;
import org.apache.rocketmq.client.trace.TraceContext;
import org.apache.rocketmq.client.trace.TraceDataEncoder;
import org.apache.rocketmq.client.utils.MessageUtil;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageConst;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.topic.TopicValidator;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

public class TraceReplyCheck {
    static int failures = 0;

    static void check(boolean ok, String what) {
        System.out.println((ok ? "PASS " : "FAIL ") + what);
        if (!ok) {
            failures++;
        }
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static void fast(org.apache.rocketmq.client.ClientConfig c, String ns) {
        c.setNamesrvAddr(ns);
        c.setPollNameServerInterval(1000);
        c.setHeartbeatBrokerInterval(1000);
    }

    public static void main(String[] args) throws Exception {
        String ns = args[0];
        String run = Long.toString(System.currentTimeMillis());
        trace(ns, "JavaTrace" + run);
        requestReply(ns, "JavaRequest" + run);
        System.out.println(failures == 0 ? "ALL PASSED" : failures + " FAILED");
        System.exit(failures == 0 ? 0 : 1);
    }

    static void trace(String ns, String topic) throws Exception {
        DefaultMQProducer producer = new DefaultMQProducer("java_trace_pg", true);
        fast(producer, ns);
        producer.start();
        List<String> ids = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            Message m = new Message(topic, "TagA", "trace-key-" + i, utf8("trace-" + i));
            SendResult r = producer.send(m);
            ids.add(r.getMsgId());
        }
        check(ids.size() == 5, "trace: 5 messages sent with enableMsgTrace " + ids);
        CountDownLatch consumed = new CountDownLatch(5);
        DefaultMQPushConsumer consumer = new DefaultMQPushConsumer("java_trace_cg", true);
        fast(consumer, ns);
        consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        consumer.subscribe(topic, "*");
        consumer.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                consumed.countDown();
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        consumer.start();
        check(consumed.await(60, TimeUnit.SECONDS), "trace: the consumer got every message");

        DefaultMQAdminExt admin = new DefaultMQAdminExt();
        admin.setNamesrvAddr(ns);
        admin.setInstanceName("trace-check-admin");
        admin.start();
        // The trace dispatcher sends in the background: look until every kind is there.
        long deadline = System.currentTimeMillis() + 30_000;
        Set<String> kinds = new TreeSet<>();
        while (System.currentTimeMillis() < deadline) {
            kinds = traceKinds(admin, ids);
            if (kinds.size() == 3 * ids.size()) {
                break;
            }
            Thread.sleep(500);
        }
        for (String id : ids) {
            for (String type : new String[] {"Pub", "SubBefore", "SubAfter"}) {
                check(kinds.contains(id + " " + type), "trace: " + type + " record of " + id);
            }
        }
        System.out.println("trace records found: " + kinds);
        System.out.println("TRACE_MSG_ID " + ids.get(0));
        admin.shutdown();
        consumer.shutdown();
        producer.shutdown();
    }

    /** "msgId type" of every trace record of `ids` in the trace topic (QUERY_MESSAGE by key). */
    static Set<String> traceKinds(DefaultMQAdminExt admin, List<String> ids) throws Exception {
        Set<String> kinds = new TreeSet<>();
        for (String id : ids) {
            QueryResult found;
            try {
                found = admin.queryMessage(TopicValidator.RMQ_SYS_TRACE_TOPIC, id, 64, 0,
                    System.currentTimeMillis() + 1000);
            } catch (Exception e) {
                continue; // not stored yet: "query message by key finished, but no message."
            }
            for (MessageExt record : found.getMessageList()) {
                String text = new String(record.getBody(), StandardCharsets.UTF_8);
                for (TraceContext ctx : TraceDataEncoder.decoderFromTraceDataString(text)) {
                    for (TraceBean bean : ctx.getTraceBeans()) {
                        if (id.equals(bean.getMsgId())) {
                            kinds.add(id + " " + ctx.getTraceType());
                        }
                    }
                }
            }
        }
        return kinds;
    }

    static void requestReply(String ns, String topic) throws Exception {
        DefaultMQProducer replier = new DefaultMQProducer("java_reply_pg");
        fast(replier, ns);
        replier.start();
        // Creates the topic (autoCreateTopicEnable) before the replying consumer subscribes.
        replier.send(new Message(topic, utf8("warm-up")));
        ConcurrentHashMap<String, Boolean> replied = new ConcurrentHashMap<>();
        DefaultMQPushConsumer consumer = new DefaultMQPushConsumer("java_reply_cg");
        fast(consumer, ns);
        consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        consumer.subscribe(topic, "*");
        consumer.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                if (m.getProperty(MessageConst.PROPERTY_MESSAGE_REPLY_TO_CLIENT) == null) {
                    continue; // the warm-up message
                }
                try {
                    String body = new String(m.getBody(), StandardCharsets.UTF_8);
                    Message reply = MessageUtil.createReplyMessage(m, utf8("reply-to-" + body));
                    SendResult r = replier.send(reply);
                    replied.put(body, true);
                    System.out.println("replied to " + body + ": " + r.getSendStatus());
                } catch (Exception e) {
                    System.out.println("reply failed: " + e);
                }
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        consumer.start();

        DefaultMQProducer requester = new DefaultMQProducer("java_request_pg");
        fast(requester, ns);
        requester.start();
        for (int i = 0; i < 5; i++) {
            String ask = "ask-" + i;
            long t0 = System.nanoTime();
            Message answer = null;
            try {
                answer = requester.request(new Message(topic, utf8(ask)), 30_000);
            } catch (Exception e) {
                System.out.println("request " + ask + " failed: " + e);
            }
            double ms = (System.nanoTime() - t0) / 1e6;
            String body = answer == null ? null : new String(answer.getBody(), StandardCharsets.UTF_8);
            check(("reply-to-" + ask).equals(body),
                String.format("request-reply: %s answered %s in %.1f ms", ask, body, ms));
        }
        requester.shutdown();
        consumer.shutdown();
        replier.shutdown();
    }
}
