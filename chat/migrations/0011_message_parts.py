"""A reply's parts (reasoning, tool calls and results, web searches, text, citations) and
its model calls' usage, for turns that are more than one text reply, and the tool-call
ledger (calls by day, tool and runner). The two message columns are nullable without a
default: adding them rewrites no row (and on SQLite does not rebuild the table, whose
full-text triggers from 0006 would go with it)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0010_admin_indexes_and_purge'),
    ]

    operations = [
        migrations.AddField(
            model_name='message',
            name='parts',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='message',
            name='rounds',
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name='DailyToolUsage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('tool', models.CharField(max_length=100)),
                ('runner', models.CharField(max_length=60)),
                ('calls', models.IntegerField(default=0)),
                ('errors', models.IntegerField(default=0)),
                ('duration_ms', models.BigIntegerField(default=0, help_text="All the calls' time together.")),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('day', 'tool', 'runner'), name='one_tool_day')],
            },
        ),
    ]
