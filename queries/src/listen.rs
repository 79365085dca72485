//! Commits of a PostgreSQL replica, for subscriptions: the replicating process announces each
//! commit on a channel (`NOTIFY`, delivered when its transaction commits), which this LISTENs
//! to; a streaming standby hears no notifications, so the replica's cursor is also read every
//! `every`. Either way each new block is published once.

use std::sync::Arc;
use std::time::Duration;

use lcw_replica::ReplicaUrl;
use lcw_replica::copy::COMMITS_CHANNEL;

use crate::db::Db;

/// Publishes the replica's cursor block on each commit (see the module's comment).
pub(crate) fn commits(db: Arc<Db>, url: ReplicaUrl, every: Duration) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    // The LISTEN connection lives on its own thread (the client blocks while it waits); a lost
    // connection is made again after a pause, and meanwhile the poll below carries on.
    let stop = tx.clone();
    let _ = std::thread::Builder::new().name("lcw-replica-listen".into()).spawn(move || {
        let mut warned = false;
        while !stop.is_closed() {
            match listen(&url, &wake_tx, &stop) {
                Ok(()) => return,
                Err(e) => {
                    if !warned {
                        tracing::warn!(replica = %url, error = %e, "cannot LISTEN for the replica's commits; reading its cursor every {} ms instead", every.as_millis());
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let block = db
                .read(|conn| Ok(lcw_schema::store::raw::Cursor::get(conn)?.map(|c| c.block_number).unwrap_or(0)))
                .await;
            if let Ok(b) = block
                && last != Some(b)
            {
                last = Some(b);
                if tx.send(b).is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            // A notification reads the cursor at once; otherwise the poll's period.
            let _ = tokio::time::timeout(every, wake.recv()).await;
        }
    });
    rx
}

/// Waits for notifications until the publisher is gone (Ok) or the connection fails.
fn listen(
    url: &ReplicaUrl,
    wake: &tokio::sync::mpsc::Sender<()>,
    stop: &tokio::sync::watch::Sender<u64>,
) -> Result<(), postgres::Error> {
    let mut client = url.config().connect(postgres::NoTls)?;
    client.batch_execute(&format!("LISTEN {COMMITS_CHANNEL}"))?;
    loop {
        if stop.is_closed() {
            return Ok(());
        }
        let mut notes = client.notifications();
        let mut iter = notes.timeout_iter(Duration::from_secs(1));
        use postgres::fallible_iterator::FallibleIterator;
        if iter.next()?.is_some() {
            // Coalesced: one read of the cursor serves every commit heard since the last one.
            let _ = wake.try_send(());
        }
    }
}
