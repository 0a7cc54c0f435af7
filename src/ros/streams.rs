//! Stream plumbing shared by the nodes: timers as streams, subscriptions into one event channel.

use futures::channel::mpsc::UnboundedSender;
use futures::prelude::*;

/// An r2r timer as a stream of ticks.
pub fn timer_stream(timer: r2r::Timer) -> impl Stream<Item = ()> {
    stream::unfold(timer, |mut timer| async move { timer.tick().await.ok().map(|_| ((), timer)) })
}

/// Forwards every item of `stream` into the task's event channel until either side ends.
pub async fn forward<E>(stream: impl Stream<Item = E>, events: UnboundedSender<E>) {
    let _ = stream.map(Ok).forward(events).await;
}
