//! TLS for the host's own connections out: the web's root certificates, as
//! wasmtime-wasi-http uses them. A plugin's outbound requests, the host's
//! MCP clients and its webhooks all trust the same roots.

use std::sync::{Arc, LazyLock};

use tokio_rustls::rustls;

/// The one client configuration of every TLS connection the host makes.
pub(crate) static CLIENT_CONFIG: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
});
