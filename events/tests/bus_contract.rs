//! The `Bus` contract suite (`recman_events::bus::contract`) on the in-process bus.

use std::sync::Arc;

use recman_events::bus::Bus;
use recman_events::{contract_tests, MemoryBus};

async fn default_bus() -> Option<Arc<dyn Bus>> {
    Some(Arc::new(MemoryBus::new()))
}

async fn limit_2() -> Option<Arc<dyn Bus>> {
    Some(Arc::new(MemoryBus::with_delivery_limit(2)))
}

contract_tests!(memory, default_bus, recman_events::bus::DEFAULT_DELIVERY_LIMIT);
contract_tests!(memory_limit_2, limit_2, 2);
