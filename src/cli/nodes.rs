//! `ffleet drain NODE` and `ffleet undrain NODE`: the operator's requests to one encoder node
//! (`messages::control`), answered by the node itself. Admin credentials only. `--wait` asks
//! again each second until the drained node runs nothing, so a script can stop it next.

use super::Cli;
use anyhow::{Context, Result, bail};
use async_nats::RequestErrorKind;
use ffleet_runtime::messages::{self, NodeAction, NodeControl, NodeState};
use ffleet_runtime::{NodeId, subjects};
use std::time::Duration;

/// How long a node's answer is waited for: it answers at once when it runs.
const ANSWER_WITHIN: Duration = Duration::from_secs(4);

pub async fn control(cli: &Cli, node: &str, action: NodeAction, wait: bool) -> Result<i32> {
    let node = NodeId::new(node).with_context(|| format!("{node:?} is not a node id"))?;
    let ctx = super::client(cli).await?;
    let mut st = ask(&ctx.client, &node, action).await?;
    print(&st);
    if wait && action == NodeAction::Drain {
        while st.running > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            st = ask(&ctx.client, &node, NodeAction::Show).await?;
        }
        println!("{node}: drained, nothing runs; it can be stopped");
    }
    Ok(0)
}

async fn ask(client: &async_nats::Client, node: &NodeId, action: NodeAction) -> Result<NodeState> {
    let req = messages::encode(&NodeControl::new(action));
    let reply = tokio::time::timeout(
        ANSWER_WITHIN,
        client.request(subjects::node_control(node), req),
    )
    .await
    .with_context(|| {
        format!(
            "node {node} did not answer within {} s",
            ANSWER_WITHIN.as_secs()
        )
    })?;
    let reply = match reply {
        Ok(r) => r,
        Err(e) if e.kind() == RequestErrorKind::NoResponders => {
            bail!("no node {node} is running (`ffleet workers` lists the live ones)")
        }
        Err(e) => return Err(e).with_context(|| format!("asking node {node}")),
    };
    let st: NodeState = messages::decode("node state", &reply.payload)?;
    if st.node != *node {
        bail!("the answer names node {}, not {node}", st.node);
    }
    if let Some(e) = &st.error {
        bail!("node {node} refused: {e}");
    }
    Ok(st)
}

fn print(st: &NodeState) {
    let state = match (st.draining, st.stopping) {
        (_, true) => "stopping",
        (true, _) => "draining",
        _ => "taking work",
    };
    println!("{}: {state}, {} unit(s) running", st.node, st.running);
}
