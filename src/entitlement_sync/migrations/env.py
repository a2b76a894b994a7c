"""Alembic environment: the URL comes from the caller (`entitlement-sync db upgrade`), never from an ini file."""

from alembic import context
from sqlalchemy import create_engine, pool

from entitlement_sync.models import Base
from entitlement_sync.settings import Settings

config = context.config
url = config.attributes.get("database_url") or Settings.from_env().database_url


def run_migrations_online() -> None:
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Never queue behind a long reader holding a lock: fail the release step, try again later.
                context.execute("SET LOCAL lock_timeout = '5s'")
            context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
