//! The operations that walk the server rather than a few keys: `clear` (SCAN and UNLINK on every
//! master), the cluster's masters, and the server details shown in stats. Each round trip of a
//! multi-step operation is bounded by the configured timeout ([`crate::layer::within`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use ::redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot};
use ::redis::{RedisError, Value as Reply};
use futures_util::future::join_all;

use crate::error::{Error, Result};

use super::Inner;

impl Inner {
    /// Runs one step of a multi-step operation within the per-round-trip timeout.
    async fn step<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        crate::layer::within(&self.config.settings.name, self.config.timeouts.operation, fut).await
    }

    pub(super) async fn clear_namespace(&self) -> Result<()> {
        let nodes = self.scan_nodes().await?;
        let results = join_all(nodes.iter().map(|node| self.unlink_node(node.as_ref(), &self.pattern))).await;
        results.into_iter().collect::<Result<Vec<u64>>>().map(drop)
    }

    /// The servers a scan visits: the single server (`None`), or every master of a cluster.
    pub(super) async fn scan_nodes(&self) -> Result<Vec<Option<(String, u16)>>> {
        match self.server.cluster {
            false => Ok(vec![None]),
            true => Ok(self.step(self.masters()).await?.into_iter().map(Some).collect()),
        }
    }

    /// One `SCAN cursor MATCH glob COUNT count` on `node` (see [`Self::scan_nodes`]): the next
    /// cursor (0 at the end) and the keys of this page.
    pub(super) async fn scan_page(
        &self,
        node: Option<&(String, u16)>,
        cursor: u64,
        glob: &str,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut scan = ::redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(glob).arg("COUNT").arg(count.max(1));
        let reply = match node {
            None => self.step(self.query::<Reply>(&scan)).await?,
            Some((host, port)) => {
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                self.step(self.route(scan, routing)).await?
            }
        };
        self.parse(reply)
    }

    /// Scans one server for the keys matching `glob` and unlinks them page by page; returns how
    /// many were unlinked.
    pub(super) async fn unlink_node(&self, node: Option<&(String, u16)>, glob: &str) -> Result<u64> {
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let (next, keys) = self.scan_page(node, cursor, glob, self.config.scan_batch).await?;
            if !keys.is_empty() {
                removed = removed.saturating_add(self.step(self.unlink(keys)).await?);
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn unlink(&self, keys: Vec<Vec<u8>>) -> Result<u64> {
        let groups: Vec<Vec<usize>> = match self.server.cluster {
            false => vec![(0..keys.len()).collect()],
            true => {
                let mut by_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
                for (i, key) in keys.iter().enumerate() {
                    by_slot.entry(Slot::for_key(key)).or_default().push(i);
                }
                by_slot.into_values().collect()
            }
        };
        let replies = join_all(groups.iter().map(|group| {
            let mut cmd = ::redis::cmd("UNLINK");
            for &i in group {
                cmd.arg(&keys[i]);
            }
            async move { self.query::<u64>(&cmd).await }
        }))
        .await;
        replies.into_iter().try_fold(0u64, |sum, n| Ok(sum.saturating_add(n?)))
    }

    /// The masters of the cluster as `(host, port)`, checked against the cluster's own count:
    /// a master the client is not connected to is an error, never silently skipped.
    pub(super) async fn masters(&self) -> Result<Vec<(String, u16)>> {
        let all_masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = self.route(::redis::cmd("PING"), all_masters).await?;
        let Reply::Map(pairs) = reply else {
            return Err(self.generic(format!("unexpected reply to PING on all masters: {reply:?}")));
        };
        let mut masters = Vec::with_capacity(pairs.len());
        for (address, answer) in pairs {
            let address: String = self.parse(address)?;
            if let Reply::ServerError(err) = answer {
                return Err(self.map_err(RedisError::from(err)));
            }
            let Some((host, port)) = address.rsplit_once(':').and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            else {
                return Err(self.generic(format!("unexpected node address `{address}`")));
            };
            masters.push((host, port));
        }
        let info: String = self.query(::redis::cmd("CLUSTER").arg("INFO")).await?;
        let size = info_field(&info, "cluster_size").and_then(|s| s.parse::<usize>().ok());
        if let Some(size) = size
            && masters.len() < size
        {
            return Err(Error::BackendUnavailable {
                backend: self.config.settings.name.clone(),
                source: format!("reached {} of the cluster's {size} masters", masters.len()).into(),
            });
        }
        Ok(masters)
    }

    pub(super) async fn refresh_details(&self) -> Result<BTreeMap<String, String>> {
        let mut details = BTreeMap::new();
        let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let reply = self.route(::redis::cmd("INFO").arg("server").clone(), random.clone()).await?;
        let info: String = self.parse(reply)?;
        for (field, detail) in [("redis_version", "server_version"), ("redis_mode", "server_mode")] {
            if let Some(value) = info_field(&info, field) {
                details.insert(detail.to_string(), value.to_string());
            }
        }
        if self.server.cluster {
            let reply = self.route(::redis::cmd("CLUSTER").arg("INFO").clone(), random).await?;
            let info: String = self.parse(reply)?;
            for (field, detail) in [
                ("cluster_state", "cluster_state"),
                ("cluster_size", "cluster_masters"),
                ("cluster_known_nodes", "cluster_known_nodes"),
            ] {
                if let Some(value) = info_field(&info, field) {
                    details.insert(detail.to_string(), value.to_string());
                }
            }
        }
        if let Ok(mut stored) = self.details.lock() {
            stored.clone_from(&details);
        }
        Ok(details)
    }
}

/// The value of `field` in an `INFO`-style `field:value` text.
pub(super) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
}

/// Escapes Redis glob characters so that `SCAN MATCH` takes `text` literally.
pub(super) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
