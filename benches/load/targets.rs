//! A server under test, lanchat or the wire server, seen the same way by the
//! workloads: make rooms (a DM or a group) with a WebSocket URL per member, and
//! idle connection URLs.

use std::path::{Path, PathBuf};

use crate::servers::{self, Account, Api, ChildServer, Res};
use crate::wire;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Lanchat,
    Wire,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Lanchat => "lanchat",
            Side::Wire => "wire limit",
        }
    }
}

/// A conversation and one WebSocket URL per member (member 0 created it).
pub struct Room {
    pub conversation_id: i64,
    pub urls: Vec<String>,
}

pub struct Target {
    pub side: Side,
    pub server: ChildServer,
    api: Option<Api>,
    next_room: u64,
    next_user: usize,
}

impl Target {
    /// Starts a fresh server of `side`; lanchat gets a new data directory `dir`.
    pub async fn start(side: Side, binary: &Path, dir: PathBuf) -> Res<Target> {
        let (server, api) = match side {
            Side::Lanchat => {
                let server = servers::start_lanchat(binary, &dir).await?;
                let api = Api::new(server.addr);
                (server, Some(api))
            }
            Side::Wire => {
                std::fs::create_dir_all(dir.parent().unwrap_or(&dir)).map_err(|e| e.to_string())?;
                (wire::start(&dir.with_extension("wire.log")).await?, None)
            }
        };
        Ok(Target {
            side,
            server,
            api,
            next_room: 0,
            next_user: 0,
        })
    }

    /// From now on the rooms' WebSockets use TLS, trusting the server's local CA
    /// (fetched over plain HTTP on the same port).
    pub async fn use_tls(&mut self) -> Res<()> {
        let api = self.api.as_mut().ok_or("not a lanchat target")?;
        let der = api
            .http
            .get(format!("http://{}/ca.crt", api.addr))
            .send()
            .await
            .map_err(|e| format!("GET /ca.crt: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("GET /ca.crt: {e}"))?;
        crate::client::trust(&der)?;
        api.tls = true;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.server.pid
    }

    async fn register(&mut self, count: usize) -> Res<Vec<Account>> {
        let api = self.api.as_ref().ok_or("not a lanchat target")?;
        let prefix = format!("bench_{}_", self.next_user);
        self.next_user += count;
        api.register_many(&prefix, count).await
    }

    /// Makes one room per size: 2 is a direct conversation, more is a group.
    pub async fn rooms(&mut self, sizes: &[usize]) -> Res<Vec<Room>> {
        match self.side {
            Side::Wire => Ok(sizes
                .iter()
                .map(|&size| {
                    self.next_room += 1;
                    let url = wire::url(&self.server, Some(self.next_room));
                    Room {
                        conversation_id: self.next_room as i64,
                        urls: vec![url; size],
                    }
                })
                .collect()),
            Side::Lanchat => {
                let total = sizes.iter().sum();
                let accounts = self.register(total).await?;
                let api = self.api.clone().ok_or("not a lanchat target")?;
                let mut rooms = Vec::with_capacity(sizes.len());
                let mut start = 0;
                for &size in sizes {
                    let members = &accounts[start..start + size];
                    start += size;
                    let owner = &members[0];
                    let conversation_id = if size == 2 {
                        api.direct(&owner.token, members[1].id).await?
                    } else {
                        let others: Vec<i64> = members[1..].iter().map(|a| a.id).collect();
                        api.group(&owner.token, "bench group", &others).await?
                    };
                    rooms.push(Room {
                        conversation_id,
                        urls: members.iter().map(|a| api.ws_url(&a.token)).collect(),
                    });
                }
                Ok(rooms)
            }
        }
    }

    /// URLs for `count` idle connections, `per_user` of them per lanchat user.
    pub async fn idle_urls(&mut self, count: usize, per_user: usize) -> Res<Vec<String>> {
        match self.side {
            Side::Wire => Ok(vec![wire::url(&self.server, None); count]),
            Side::Lanchat => {
                let users = count.div_ceil(per_user.max(1));
                let accounts = self.register(users).await?;
                let api = self.api.clone().ok_or("not a lanchat target")?;
                Ok((0..count)
                    .map(|i| api.ws_url(&accounts[i % users].token))
                    .collect())
            }
        }
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}
