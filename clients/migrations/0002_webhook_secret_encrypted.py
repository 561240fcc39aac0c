"""Webhook secrets are stored encrypted (clients.crypto): widen the column and encrypt existing rows."""

from django.db import migrations

import clients.fields


def encrypt_existing(apps, schema_editor):
    Client = apps.get_model("clients", "Client")
    for client in Client.objects.exclude(webhook_secret="").only("pk", "webhook_secret"):
        # Reading passes a legacy plaintext value through; saving writes it as a token.
        client.save(update_fields=["webhook_secret"])


def decrypt_existing(apps, schema_editor):
    Client = apps.get_model("clients", "Client")
    with schema_editor.connection.cursor() as cursor:
        for client in Client.objects.exclude(webhook_secret="").only("pk", "webhook_secret"):
            # Raw SQL: the field would encrypt again; the older schema stores the plaintext.
            cursor.execute(
                "UPDATE clients_client SET webhook_secret = %s WHERE id = %s", [client.webhook_secret, client.pk]
            )


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="client",
            name="webhook_secret",
            field=clients.fields.EncryptedTextField(
                blank=True,
                default="",
                help_text="Standard Webhooks secret (whsec_…) used to sign callbacks; empty means unsigned. "
                "Stored encrypted.",
            ),
        ),
        migrations.RunPython(encrypt_existing, decrypt_existing),
    ]
