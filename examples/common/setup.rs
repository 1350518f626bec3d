//! The embedded defaults that the examples share: a throwaway PostgreSQL
//! without `DATABASE_URL`, and the Stripe stand-in without
//! `STRIPE_SECRET_KEY`.

use anyhow::Context;
use citadel::core::Secret;
use citadel::postgres::PgStore;
use citadel::postgres::ephemeral::EphemeralPostgres;
use citadel::stripe::gateway::StripeGateway;
use citadel::stripe::stand_in::StandIn;

/// Connects to `DATABASE_URL` and migrates it, or starts and migrates a
/// throwaway cluster, which is removed when the returned handle drops.
pub(crate) async fn open_store() -> anyhow::Result<(PgStore, Option<EphemeralPostgres>)> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let store = PgStore::connect(&url)
            .await
            .context("connecting to DATABASE_URL")?;
        store.migrate().await.context("running migrations")?;
        return Ok((store, None));
    }
    let cluster = EphemeralPostgres::start().context("starting a throwaway PostgreSQL")?;
    eprintln!(
        "DATABASE_URL not set: using a throwaway PostgreSQL at {}, removed on exit",
        cluster.url()
    );
    let store = PgStore::connect(cluster.url())
        .await
        .context("connecting to the throwaway PostgreSQL")?;
    store.migrate().await.context("running migrations")?;
    Ok((store, Some(cluster)))
}

/// Pays through Stripe with `STRIPE_SECRET_KEY`, or through a local Stripe
/// stand-in, which is returned so the caller can script it and keep it
/// running.
pub(crate) async fn open_gateway() -> anyhow::Result<(StripeGateway, Option<StandIn>)> {
    if let Ok(key) = std::env::var("STRIPE_SECRET_KEY") {
        eprintln!("STRIPE_SECRET_KEY set: paying invoices through Stripe's API");
        return Ok((StripeGateway::builder(Secret::new(key)).build()?, None));
    }
    let stand_in = StandIn::start()
        .await
        .context("starting the Stripe stand-in")?;
    eprintln!(
        "STRIPE_SECRET_KEY not set: paying invoices on a local Stripe stand-in at {}",
        stand_in.url()
    );
    let gateway = StripeGateway::builder(Secret::new("sk_test_citadel_stand_in"))
        .base_url(stand_in.url())
        .build()?;
    Ok((gateway, Some(stand_in)))
}
