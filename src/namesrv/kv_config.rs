//! The nameserver's KV config (`KVConfigManager`): namespace → key → value, persisted as
//! `{"configTable":{namespace:{key:value}}}` at `kvConfigPath`, written atomically.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomically;
use crate::protocol::route::KvTable;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KvFile {
    #[serde(default)]
    config_table: BTreeMap<String, BTreeMap<String, String>>,
}

/// The KV store. `path` = `None` keeps it in memory only.
#[derive(Debug, Default)]
pub struct KvConfig {
    table: BTreeMap<String, BTreeMap<String, String>>,
    path: Option<PathBuf>,
}

impl KvConfig {
    /// Loads `path` if it exists (a missing file is an empty store; a corrupt one is an error).
    pub fn load(path: Option<PathBuf>) -> io::Result<KvConfig> {
        let table = match &path {
            Some(p) if p.exists() => {
                let bytes = std::fs::read(p)?;
                let file: KvFile = crate::protocol::lenient::from_slice(&bytes).map_err(|e| {
                    io::Error::other(format!("{}: not a KV config file: {e}", p.display()))
                })?;
                file.config_table
            }
            _ => BTreeMap::new(),
        };
        Ok(KvConfig { table, path })
    }

    /// PUT_KV_CONFIG.
    pub fn put(&mut self, namespace: &str, key: &str, value: &str) -> io::Result<()> {
        self.table
            .entry(namespace.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        self.persist()
    }

    /// GET_KV_CONFIG.
    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.table.get(namespace)?.get(key).map(String::as_str)
    }

    /// DELETE_KV_CONFIG.
    pub fn delete(&mut self, namespace: &str, key: &str) -> io::Result<()> {
        let Some(ns) = self.table.get_mut(namespace) else {
            return Ok(());
        };
        if ns.remove(key).is_some() {
            if ns.is_empty() {
                self.table.remove(namespace);
            }
            self.persist()?;
        }
        Ok(())
    }

    /// GET_KVLIST_BY_NAMESPACE.
    pub fn namespace(&self, namespace: &str) -> Option<KvTable> {
        self.table
            .get(namespace)
            .map(|t| KvTable { table: t.clone() })
    }

    fn persist(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = KvFile {
            config_table: self.table.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        write_atomically(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_persist_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("namesrv/kvConfig.json");
        let mut kv = KvConfig::load(Some(path.clone())).unwrap();
        kv.put("ORDER_TOPIC_CONFIG", "T", "broker-a:4").unwrap();
        kv.put("ns", "k", "v").unwrap();
        kv.delete("ns", "k").unwrap();
        let again = KvConfig::load(Some(path.clone())).unwrap();
        assert_eq!(again.get("ORDER_TOPIC_CONFIG", "T"), Some("broker-a:4"));
        assert_eq!(again.get("ns", "k"), None);
        assert!(again.namespace("ns").is_none());
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(KvConfig::load(Some(path)).is_err());
    }
}
