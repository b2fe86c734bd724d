//! The pod workers' [`Hooks`] over the probe module's lifecycle handlers
//! (`probe::lifecycle::run_handler`: exec through the runtime, httpGet
//! from the node to the pod, sleep).

use super::kubelet::{HookCall, Hooks};
use crate::probe::{lifecycle, CommandRunner, Target};
use futures_lite::future::BoxedLocal;
use std::rc::Rc;

/// Runs lifecycle handlers with `runner` (the runtime).
pub struct LifecycleHooks<R> {
    runner: Rc<R>,
}

impl<R> LifecycleHooks<R> {
    pub fn new(runner: Rc<R>) -> Self {
        LifecycleHooks { runner }
    }
}

impl<R: CommandRunner + 'static> Hooks for LifecycleHooks<R> {
    fn run(&self, call: HookCall) -> BoxedLocal<Result<(), String>> {
        let runner = self.runner.clone();
        Box::pin(async move {
            let pod_ip = call.pod_ip.clone().unwrap_or_default();
            let t = Target {
                pod: &call.pod,
                container: &call.container,
                container_id: &call.container_id,
                pod_ip: &pod_ip,
            };
            lifecycle::run_handler(&*runner, &t, &call.handler, call.limit).await
        })
    }
}
