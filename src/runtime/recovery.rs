//! Start-up recovery (after a restart or a `kill -9` of picolet): the
//! checkpoints say what should exist, the shims say what runs.
//!
//! 1. Every checkpointed bundle gets its `log` FIFO drained again and its
//!    shim client back (from `BUNDLE/address`).
//! 2. Half-made things (`creating` checkpoints, containers of unknown
//!    sandboxes) are removed whole.
//! 3. Each live container's log copier is reopened at once (the shim kept
//!    the output in the FIFOs: nothing is lost), then its `State` is read:
//!    running → adopted; exited meanwhile → finished (exit code and time
//!    from the shim, OOM from the cgroup, task deleted, log flushed); task
//!    gone → exited with an unknown status; shim dead → the shim's
//!    `delete` action for every container of that sandbox, all exited.
//!    A running container of a known sandbox is never killed or re-made.
//! 4. Orphans without a checkpoint go: bundles (their task killed and
//!    deleted unless it belongs to a known sandbox, overlay unmounted),
//!    netns files and CNI attachments (CNI DEL from the cache), pod
//!    cgroups of pods no sandbox belongs to (only when no process is left
//!    in them), and pod file dirs (shm unmounted).
//! 5. runc dirs of picolet's namespaces without `state.json` (a `runc
//!    create` the shim killed when picolet died) whose id no live shim
//!    knows: `runc delete --force`, else removed by hand.

use super::service::{
    cleanup_dead, clear_runc_state, kill_and_wait, shim_gone, unmount_all, Ctr, Ended, Inner,
    Sandbox,
};
use super::shim::{Bundle, TaskStatus, GROUP_ANNOTATION};
use super::state::{ContainerPhase, Loaded};
use crate::network::{netns, PodNetworkRequest};
use crate::runtime::logs::ContainerLog;
use std::collections::BTreeSet;
use std::rc::Rc;

impl Inner {
    pub(super) async fn recover(self: &Rc<Self>, loaded: Loaded) -> anyhow::Result<()> {
        for (p, why) in &loaded.unreadable {
            log::error!("ignoring checkpoint {}: {why}", p.display());
        }
        for cp in loaded.sandboxes {
            let shims = self.shims_for(&cp.shim_namespace, &cp.shim_address);
            let sb = Sandbox::new(cp, shims);
            self.reattach_sandbox(&sb);
            self.sandboxes.borrow_mut().insert(sb.id(), sb);
        }
        for cp in loaded.containers {
            let c = Ctr::new(cp);
            self.reattach_container(&c);
            self.containers.borrow_mut().insert(c.id(), c);
        }
        self.remove_half_made().await;
        self.recover_states().await;
        self.remove_orphans(&loaded.stray_sandbox_dirs).await;
        self.clear_half_made_runc().await;
        let (s, c) = (
            self.sandboxes.borrow().len(),
            self.containers.borrow().len(),
        );
        log::info!("runtime recovered {s} pod sandboxes and {c} containers");
        Ok(())
    }

    fn reattach_sandbox(&self, sb: &Sandbox) {
        let bundle = sb.bundle();
        if !bundle.dir.exists() || sb.cp.borrow().stopped {
            return;
        }
        match bundle.drain_log() {
            Ok(d) => *sb.drain.borrow_mut() = Some(d),
            Err(e) => log::warn!("pod sandbox {}: {e:#}", sb.id()),
        }
        // BUNDLE/address, else the URL the checkpoint kept.
        let recorded = sb.cp.borrow().shim_url.clone();
        let shim = sb
            .shims
            .reconnect(&bundle)
            .and_then(|s| match (s, recorded) {
                (Some(s), _) => Ok(Some(s)),
                (None, Some(url)) => Ok(Some(
                    sb.shims.attach(super::shim::parse_start_output(&url)?),
                )),
                (None, None) => Ok(None),
            });
        match shim {
            Ok(s) => *sb.shim.borrow_mut() = s,
            Err(e) => log::warn!("pod sandbox {}: {e:#}", sb.id()),
        }
    }

    fn reattach_container(&self, c: &Ctr) {
        let bundle = c.bundle();
        if !bundle.dir.exists() {
            return;
        }
        match bundle.drain_log() {
            Ok(d) => *c.drain.borrow_mut() = Some(d),
            Err(e) => log::warn!("container {}: {e:#}", c.id()),
        }
        match self.container_shims(c).reconnect(&bundle) {
            Ok(s) => *c.shim.borrow_mut() = s,
            Err(e) => log::warn!("container {}: {e:#}", c.id()),
        }
    }

    /// Containers being created, of sandboxes being created, or of
    /// sandboxes without a checkpoint; then sandboxes being created.
    async fn remove_half_made(&self) {
        let containers: Vec<Rc<Ctr>> = self.containers.borrow().values().cloned().collect();
        for c in containers {
            let sid = c.cp.borrow().sandbox_id.clone();
            let sandbox_ok = self
                .sandboxes
                .borrow()
                .get(&sid)
                .is_some_and(|s| !s.cp.borrow().creating);
            if c.phase() != ContainerPhase::Creating && sandbox_ok {
                continue;
            }
            let id = c.id();
            log::info!("removing half-made container {id}");
            match self.teardown_container(&c).await {
                Ok(()) => {
                    if let Err(e) = self.state.remove_container(&id) {
                        log::error!("{e:#}");
                    }
                    self.containers.borrow_mut().remove(&id);
                }
                Err(e) => log::error!("container {id}: {e:#}"),
            }
        }
        let sandboxes: Vec<Rc<Sandbox>> = self
            .sandboxes
            .borrow()
            .values()
            .filter(|s| s.cp.borrow().creating)
            .cloned()
            .collect();
        for sb in sandboxes {
            let id = sb.id();
            log::info!("removing half-made pod sandbox {id}");
            let _g = sb.lock.lock().await;
            let res = async {
                self.stop_sandbox_locked(&sb).await?;
                self.remove_sandbox_locked(&sb).await
            }
            .await;
            if let Err(e) = res {
                log::error!("pod sandbox {id}: {e}");
            }
        }
    }

    /// Reads what runs and adopts or finishes it.
    async fn recover_states(&self) {
        // Log copiers first: a finish below flushes what waited in the FIFOs.
        let containers: Vec<Rc<Ctr>> = self.containers.borrow().values().cloned().collect();
        for c in &containers {
            if c.phase() == ContainerPhase::Running {
                self.reopen_log(c);
            }
        }
        let sandboxes: Vec<Rc<Sandbox>> = self.sandboxes.borrow().values().cloned().collect();
        for sb in &sandboxes {
            let live = {
                let cp = sb.cp.borrow();
                !cp.stopped && cp.exit.is_none()
            };
            if !live {
                continue;
            }
            let shim = sb.shim.borrow().clone();
            let Some(shim) = shim else {
                self.finish_sandbox(sb, Ended::vanished()).await;
                continue;
            };
            match shim.state(&sb.id(), None).await {
                Ok(st) if st.status == TaskStatus::Stopped => {
                    self.finish_sandbox(sb, Ended::of(st.exit())).await;
                }
                Ok(_) => log::info!("adopted pod sandbox {}", sb.id()),
                Err(e) if e.is_not_found() => {
                    self.finish_sandbox(sb, Ended::vanished()).await;
                }
                Err(e) if shim_gone(&e) => {
                    self.dead_shim(sb).await;
                }
                Err(e) => log::warn!("pod sandbox {}: state: {e}", sb.id()),
            }
        }
        for c in &containers {
            let id = c.id();
            match c.phase() {
                ContainerPhase::Running => {
                    let shim = c.shim.borrow().clone();
                    let Some(shim) = shim else {
                        self.finish_container(c, Ended::vanished()).await;
                        continue;
                    };
                    match shim.state(&id, None).await {
                        Ok(st) if st.status == TaskStatus::Stopped => {
                            self.finish_container(c, Ended::of(st.exit())).await;
                        }
                        Ok(_) => log::info!("adopted container {id}"),
                        Err(e) if e.is_not_found() => {
                            self.finish_container(c, Ended::vanished()).await;
                        }
                        Err(e) if shim_gone(&e) => {
                            let sid = c.cp.borrow().sandbox_id.clone();
                            let sb = self.sandboxes.borrow().get(&sid).cloned();
                            match sb {
                                Some(sb) => {
                                    self.dead_shim(&sb).await;
                                }
                                None => {
                                    let ended = cleanup_dead(&self.shims, &c.bundle()).await;
                                    self.finish_container(c, ended).await;
                                }
                            }
                        }
                        Err(e) => log::warn!("container {id}: state: {e}"),
                    }
                }
                ContainerPhase::Created => self.recover_created(c).await,
                ContainerPhase::Exited => {
                    // A crash between Delete and the unmount.
                    if let Err(e) = unmount_all(&c.bundle().rootfs()) {
                        log::warn!("container {id}: {e:#}");
                    }
                }
                ContainerPhase::Creating => {}
            }
        }
    }

    /// A created container whose start was under way at the crash: a task
    /// that runs is adopted, one that never started is deleted (the
    /// container stays created).
    async fn recover_created(&self, c: &Rc<Ctr>) {
        let id = c.id();
        let shim = c.shim.borrow().clone();
        let Some(shim) = shim else { return };
        match shim.state(&id, None).await {
            Ok(st) if st.status == TaskStatus::Running => {
                {
                    let mut cp = c.cp.borrow_mut();
                    cp.phase = ContainerPhase::Running;
                    cp.pid = st.pid;
                    cp.started_at = crate::runtime::rules::now_ns();
                }
                self.save_container(c);
                self.reopen_log(c);
                log::info!("adopted container {id} (its start was under way)");
            }
            Ok(_) => {
                kill_and_wait(&shim, &id).await;
                if let Err(e) = shim.delete(&id, None).await {
                    if !e.is_not_found() {
                        log::warn!("delete task {id}: {e}");
                    }
                }
            }
            Err(_) => {}
        }
    }

    fn reopen_log(&self, c: &Ctr) {
        let bundle = c.bundle();
        if !bundle.dir.exists() {
            return;
        }
        let log_path = c.cp.borrow().log_path.clone();
        match ContainerLog::open(
            Some(&bundle.stdout_fifo()),
            Some(&bundle.stderr_fifo()),
            &log_path,
            self.log_policy,
        ) {
            Ok(l) => *c.copy.borrow_mut() = Some(l.start()),
            Err(e) => log::warn!("container {}: reopen its log: {e:#}", c.id()),
        }
    }

    async fn remove_orphans(&self, stray_sandbox_dirs: &[std::path::PathBuf]) {
        let (sandbox_ids, container_ids, live_net, uids) = {
            let sbs = self.sandboxes.borrow();
            let live_net: BTreeSet<String> = sbs
                .values()
                .filter(|s| !s.cp.borrow().stopped)
                .map(|s| s.id())
                .collect();
            let uids: BTreeSet<String> = sbs
                .values()
                .map(|s| s.cp.borrow().config.metadata.uid.clone())
                .collect();
            (
                sbs.keys().cloned().collect::<BTreeSet<String>>(),
                self.containers
                    .borrow()
                    .keys()
                    .cloned()
                    .collect::<BTreeSet<String>>(),
                live_net,
                uids,
            )
        };
        // Bundles.
        if let Ok(rd) = std::fs::read_dir(&self.bundles_dir) {
            let names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            for name in names {
                if sandbox_ids.contains(&name) || container_ids.contains(&name) {
                    continue;
                }
                self.remove_orphan_bundle(&name, &sandbox_ids).await;
            }
        }
        // Network namespaces and CNI attachments.
        let mut pods: BTreeSet<String> = netns::list(&self.netns_dir)
            .unwrap_or_default()
            .into_iter()
            .collect();
        pods.extend(self.net.cni().cached_pods().unwrap_or_default());
        for pod in pods.difference(&live_net) {
            log::info!("removing the network of gone pod sandbox {pod}");
            let req = PodNetworkRequest {
                pod_id: pod.clone(),
                netns: self.net.netns_path(pod),
                ..Default::default()
            };
            if let Err(e) = self.net.teardown(&req).await {
                log::error!("network of gone pod sandbox {pod}: {e:#}");
            }
        }
        // Pod cgroups of pods no sandbox belongs to.
        if self.cgroups_per_qos {
            let parents = super::convert::qos_cgroups(&self.cgroup_root);
            for parent in &parents {
                for child in self.cgroups.children(parent) {
                    let Some(uid) = child.strip_prefix("pod") else {
                        continue;
                    };
                    if uids.contains(uid) {
                        continue;
                    }
                    let path = format!("{}/{child}", parent.trim_end_matches('/'));
                    if self.cgroups.has_processes(&path) {
                        log::warn!(
                            "cgroup {path} of an unknown pod still has processes: left alone"
                        );
                        continue;
                    }
                    log::info!("removing the cgroup of gone pod {uid}");
                    if let Err(e) = self.cgroups.remove(&path) {
                        log::error!("{e:#}");
                    }
                }
            }
        }
        // Pod file dirs without a checkpoint.
        for d in stray_sandbox_dirs {
            log::info!("removing stray pod files {}", d.display());
            let res = super::spec::release_pod_files(d).and_then(|()| {
                std::fs::remove_dir_all(d)
                    .map_err(|e| anyhow::anyhow!("remove {}: {e}", d.display()))
            });
            if let Err(e) = res {
                log::error!("{e:#}");
            }
        }
    }

    /// runc dirs without `state.json` (a `runc create` the shim killed when
    /// picolet died) in the namespaces of picolet's shims, unless a live
    /// shim knows the id. Other namespaces are never looked at.
    async fn clear_half_made_runc(&self) {
        let mut all = vec![self.shims.clone()];
        all.extend(self.other_shims.borrow().iter().cloned());
        for shims in all {
            let Some(root) = super::runc_state::root_for(&shims.config().namespace) else {
                continue;
            };
            for id in super::runc_state::half_made_ids(&root) {
                if self.shim_knows(&id).await {
                    log::warn!(
                        "runc state {id} has no state.json but its shim knows it: left alone"
                    );
                    continue;
                }
                clear_runc_state(&shims, &id).await;
            }
        }
    }

    /// Whether a known container's or sandbox's shim answers for `id`.
    async fn shim_knows(&self, id: &str) -> bool {
        let shim = {
            let c = self.containers.borrow().get(id).cloned();
            match c {
                Some(c) => c.shim.borrow().clone(),
                None => self
                    .sandboxes
                    .borrow()
                    .get(id)
                    .and_then(|s| s.shim.borrow().clone()),
            }
        };
        match shim {
            Some(shim) => shim.state(id, None).await.is_ok(),
            None => false,
        }
    }

    /// A bundle no checkpoint names: a half-made or forgotten container.
    async fn remove_orphan_bundle(&self, name: &str, sandboxes: &BTreeSet<String>) {
        let Ok(bundle) = Bundle::new(&self.bundles_dir, name) else {
            return;
        };
        let group = std::fs::read(bundle.config_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["annotations"][GROUP_ANNOTATION]
                    .as_str()
                    .map(str::to_string)
            });
        let known_group = group.as_ref().is_some_and(|g| sandboxes.contains(g));
        let _drain = bundle.drain_log();
        if let Ok(Some(shim)) = self.shims.reconnect(&bundle) {
            match shim.state(name, None).await {
                Ok(st) => {
                    if st.status != TaskStatus::Stopped {
                        if known_group {
                            log::warn!(
                                "bundle {name} without checkpoint runs in pod sandbox {}: left alone",
                                group.unwrap_or_default()
                            );
                            return;
                        }
                        kill_and_wait(&shim, name).await;
                    }
                    if let Err(e) = shim.delete(name, None).await {
                        if !e.is_not_found() {
                            log::warn!("delete orphan task {name}: {e}");
                        }
                    }
                    if !known_group {
                        // A no-op while the shim still serves other tasks.
                        let _ = self.shims.shutdown(&shim, name).await;
                    }
                }
                Err(e) if shim_gone(&e) => {
                    cleanup_dead(&self.shims, &bundle).await;
                }
                Err(_) => {}
            }
            self.shims.forget(shim.address());
        }
        log::info!("removing orphan bundle {name}");
        let res = unmount_all(&bundle.rootfs()).and_then(|()| bundle.remove());
        if let Err(e) = res {
            log::error!("orphan bundle {name}: {e:#}");
        }
    }
}
