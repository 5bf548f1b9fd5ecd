//! Figures read on each scrape rather than counted: the process's memory and
//! descriptors (from `/proc/self`, Linux only; elsewhere nothing), and the
//! store's queues, batches and pool (`Store::load`).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use temppass_store::Store;

/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds` and `process_max_fds`: the names every Prometheus
/// client uses, so existing dashboards work.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // statm: sizes in pages; 4 KiB pages on every Linux temppass runs on.
        const PAGE_BYTES: i64 = 4096;
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let mut fields = statm.split_whitespace().map(|f| f.parse::<i64>().unwrap_or(0));
            let (virtual_pages, resident_pages) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                resident_pages * PAGE_BYTES,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                virtual_pages * PAGE_BYTES,
            )?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            gauge(&mut encoder, "process_open_fds", "Open file descriptors", as_i64(entries.count() as u64))?;
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            let max = limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<i64>().ok());
            if let Some(max) = max {
                gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors", max)?;
            }
        }
        Ok(())
    }
}

/// The store's `load()`, under the `temppass_store_` names.
pub(crate) struct StoreCollector(pub(crate) Arc<dyn Store>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = self.0.load();
        gauge(
            &mut encoder,
            "store_queued_writes",
            "Writes waiting for the store's writer",
            as_i64(load.queued_writes),
        )?;
        counter(&mut encoder, "store_batches", "Write batches the store's writer ran", load.batches)?;
        counter(
            &mut encoder,
            "store_batched_writes",
            "Writes in those batches (divided by store_batches: the mean batch size)",
            load.batched_writes,
        )?;
        gauge(
            &mut encoder,
            "store_pool_connections",
            "PostgreSQL connections the pool holds (0 for SQLite)",
            as_i64(load.pool_connections),
        )?;
        gauge(
            &mut encoder,
            "store_pool_connections_in_use",
            "PostgreSQL connections of the pool in use (0 for SQLite)",
            as_i64(load.pool_in_use),
        )?;
        Ok(())
    }
}
