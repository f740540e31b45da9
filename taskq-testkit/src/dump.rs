//! [`RedisServer::dump`]: everything taskq keeps in a server, as text, for tests that check
//! what is (or is not) readable at rest.

use crate::RedisServer;

impl RedisServer {
    /// Every `taskq*` key and its values (lists, hashes, sets, sorted sets, strings), one per
    /// line, key names included.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached.
    pub async fn dump(&self) -> String {
        let mut conn = redis::Client::open(self.url())
            .expect("a valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("the server answers");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("taskq*")
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let mut text = String::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("TYPE");
            let mut read = match kind.as_str() {
                "list" => redis::cmd("LRANGE"),
                "hash" => redis::cmd("HGETALL"),
                "set" => redis::cmd("SMEMBERS"),
                "zset" => redis::cmd("ZRANGE"),
                "string" => redis::cmd("GET"),
                _ => continue,
            };
            read.arg(&key);
            if matches!(kind.as_str(), "list" | "zset") {
                read.arg(0).arg(-1);
            }
            let values: Vec<String> = if kind == "string" {
                vec![read.query_async(&mut conn).await.expect("GET")]
            } else {
                read.query_async(&mut conn).await.expect("read")
            };
            text.push_str(&key);
            text.push('\n');
            for value in values {
                text.push_str(&value);
                text.push('\n');
            }
        }
        text
    }
}
