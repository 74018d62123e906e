//! Subscriber setup: log lines on stderr filtered by `RECMAN_LOG`, and, only
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans exported over OTLP/HTTP
//! (protobuf) filtered by `RECMAN_TRACE`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracerProvider, TracerProviderBuilder};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// Log lines shown without `RECMAN_LOG`: warnings and errors, but not lapin's
/// own (a refused login or a broker restart is reported once, by recman, in
/// its own words; lapin's lines would repeat it, some misleadingly).
/// `RECMAN_LOG=warn` shows them too.
#[cfg(feature = "otlp")]
pub const DEFAULT_LOG: &str = "warn,lapin=off";

use crate::propagate::JobIdGenerator;

/// Which spans are exported when `RECMAN_TRACE` is not set: recman's job
/// spans (info), and warnings from everything else as span events.
pub const DEFAULT_OTEL_FILTER: &str = "warn,recman_engine=info,recman_workers=info,recman_amqp=info";

/// The filter of the OpenTelemetry layer: `RECMAN_TRACE`, else [`DEFAULT_OTEL_FILTER`].
pub fn otel_filter() -> EnvFilter {
    EnvFilter::try_from_env("RECMAN_TRACE").unwrap_or_else(|_| EnvFilter::new(DEFAULT_OTEL_FILTER))
}

/// A tracer provider builder with recman's id generator (a job's root span
/// gets the job's ids) and `service.name` = `service` unless
/// `OTEL_SERVICE_NAME` says otherwise. Add an exporter and build.
pub fn provider_builder(service: &str) -> TracerProviderBuilder {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_string());
    }
    SdkTracerProvider::builder()
        .with_id_generator(JobIdGenerator::default())
        .with_resource(resource.build())
}

/// The OpenTelemetry layer over `provider`, with [`otel_filter`].
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("recman"))
        .with_threads(false)
        .with_filter(otel_filter())
}

#[cfg(feature = "otlp")]
pub use otlp::{init, Guard};

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::Duration;

    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::WithHttpConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    use super::{otel_layer, provider_builder};

    /// Env vars that turn OTLP export on.
    const ENDPOINT_VARS: [&str; 2] = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ];

    /// Keeps the exporter of [`init`]; [`Guard::shutdown`] (or drop) sends
    /// the spans still buffered. Call it before the tokio runtime stops.
    pub struct Guard {
        provider: Option<SdkTracerProvider>,
    }

    impl Guard {
        /// True when spans are exported.
        pub fn exporting(&self) -> bool {
            self.provider.is_some()
        }

        /// Flushes and stops the exporter (blocks up to its export timeout).
        pub fn shutdown(mut self) {
            self.stop();
        }

        fn stop(&mut self) {
            if let Some(p) = self.provider.take() {
                if let Err(e) = p.shutdown() {
                    eprintln!("warning: not every span was exported to OTLP: {e}");
                }
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Installs the global subscriber: log lines on stderr (`RECMAN_LOG`,
    /// default [`DEFAULT_LOG`](super::DEFAULT_LOG)), plus the OTLP/HTTP exporter of spans when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set. The
    /// exporter sends on `rt`, so shut the guard down before `rt` goes.
    pub fn init(service: &str, rt: &tokio::runtime::Handle) -> Guard {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(
                EnvFilter::try_from_env("RECMAN_LOG").unwrap_or_else(|_| EnvFilter::new(super::DEFAULT_LOG)),
            );
        let wanted = ENDPOINT_VARS
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        let provider = if wanted {
            match otlp_provider(service, rt) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("warning: OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter did not start: {e}; no spans are exported");
                    None
                }
            }
        } else {
            None
        };
        let otel = provider.as_ref().map(otel_layer);
        let _ = tracing_subscriber::registry().with(fmt).with(otel).try_init();
        Guard { provider }
    }

    fn otlp_provider(
        service: &str,
        rt: &tokio::runtime::Handle,
    ) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
        // One TLS stack everywhere: rustls with ring (reqwest is built without a provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime {
                client,
                rt: rt.clone(),
            })
            .build()?;
        Ok(provider_builder(service).with_batch_exporter(exporter).build())
    }

    /// The workspace's async reqwest client, run on the application's tokio
    /// runtime: the SDK's batch processor exports from its own thread.
    #[derive(Debug)]
    struct OnRuntime {
        client: reqwest::Client,
        rt: tokio::runtime::Handle,
    }

    #[async_trait::async_trait]
    impl HttpClient for OnRuntime {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let client = self.client.clone();
            self.rt
                .spawn(async move { client.send_bytes(request).await })
                .await
                .map_err(|e| Box::new(e) as HttpError)?
        }
    }
}
