//! Commits of a PostgreSQL replica, for subscriptions and memoized answers: the replicating
//! process announces each commit on a channel (`NOTIFY`, delivered when its transaction
//! commits), which this LISTENs to; a streaming standby hears no notifications, so the replica's
//! cursor is also read every `every`. Either way each new block is published once, and while
//! notifications are heard the head read is kept for requests ([`crate::db::Pushed`]).

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
    let heard = db.clone();
    let _ = std::thread::Builder::new().name("lcw-replica-listen".into()).spawn(move || {
        let mut warned = false;
        while !stop.is_closed() {
            let result = listen(&url, &wake_tx, &stop, &heard);
            heard.pushed.listening(false);
            match result {
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
            let head = db.read(crate::db::read_head).await;
            if let Ok(head) = &head {
                db.pushed.offer(*head);
            }
            let block = head.map(|h| h.map_or(0, |h| h.version.0));
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
    db: &Db,
) -> Result<(), postgres::Error> {
    let mut client = url.config().connect(postgres::NoTls)?;
    client.batch_execute(&format!("LISTEN {COMMITS_CHANNEL}"))?;
    // From now on every commit is heard: the head read after this wake-up is kept, and read
    // again on each notification.
    db.pushed.listening(true);
    let _ = wake.try_send(());
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
