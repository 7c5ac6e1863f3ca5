//! Cluster memory: the agents and nodes ever seen alive, so one that falls silent is missed.

use async_trait::async_trait;

use super::{CatalogError, SqlCatalog};

/// The agents and nodes seen alive.
#[async_trait]
pub trait ClusterCatalog: Send + Sync {
    /// Records agents seen alive (server_id, cluster) at `now_ms`.
    async fn agents_seen(&self, seen: &[(String, String)], now_ms: i64)
        -> Result<(), CatalogError>;
    /// Agents ever seen: (server_id, cluster, last_seen_ms).
    async fn agents(&self) -> Result<Vec<(String, String, i64)>, CatalogError>;
    /// Records nodes seen alive (node_id, cluster, ip).
    async fn nodes_seen(
        &self,
        seen: &[(String, String, String)],
        now_ms: i64,
    ) -> Result<(), CatalogError>;
    /// Nodes ever seen: (node_id, cluster, ip, last_seen_ms).
    async fn nodes(&self) -> Result<Vec<(String, String, String, i64)>, CatalogError>;
}

#[async_trait]
impl ClusterCatalog for SqlCatalog {
    async fn agents_seen(
        &self,
        seen: &[(String, String)],
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await?;
        for (server, cluster) in seen {
            sqlx::query(
                "INSERT INTO agents (server_id, cluster, last_seen_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (server_id, cluster) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
            )
            .bind(server.clone())
            .bind(cluster.clone())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<(String, String, i64)>, CatalogError> {
        Ok(
            sqlx::query_as("SELECT server_id, cluster, last_seen_ms FROM agents")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn nodes_seen(
        &self,
        seen: &[(String, String, String)],
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await?;
        for (node, cluster, ip) in seen {
            sqlx::query(
                "INSERT INTO nodes (node_id, cluster, ip, last_seen_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (node_id) DO UPDATE SET cluster = excluded.cluster, \
                 ip = excluded.ip, last_seen_ms = excluded.last_seen_ms",
            )
            .bind(node.clone())
            .bind(cluster.clone())
            .bind(ip.clone())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<(String, String, String, i64)>, CatalogError> {
        Ok(
            sqlx::query_as("SELECT node_id, cluster, ip, last_seen_ms FROM nodes")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
